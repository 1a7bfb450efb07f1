"""Run ``cloud-api-adaptor`` with the test doubles (tests and benchmarks only).

    python -m tests.fakes.run_adaptor fakecloud [flags]   # from the repository root

Gives the real entry point (:func:`adaptor.__main__.main`) a provider loader that also knows
``fakecloud`` (``tests.fakes.httpprovider``, a loopback fake cloud whose VMs outlive the
adaptor) and a network factory that understands ``TUNNEL_TYPE=fake``
(``tests.fakes.network``: no netns, real VXLAN id allocator).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from adaptor.__main__ import main
from adaptor.config import AdaptorSettings
from adaptor.network.base import WorkerNetwork
from adaptor.server import make_network as real_make_network
from providers import registry
from tests.fakes.network import FakeWorkerNetwork


def load_provider(name: str) -> ModuleType:
    if name == "fakecloud":
        return importlib.import_module("tests.fakes.httpprovider")
    return registry.load(name)


def make_network(settings: AdaptorSettings) -> WorkerNetwork:
    if settings.tunnel_type == "fake":
        return FakeWorkerNetwork()
    return real_make_network(settings)


if __name__ == "__main__":
    sys.exit(main(loader=load_provider, make_network=make_network))
