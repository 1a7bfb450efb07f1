"""Run ``cloud-api-adaptor`` with the test doubles registered (tests and benchmarks only).

    python -m tests.fakes.run_adaptor fakecloud [flags]   # from the repository root

Adds the ``fakecloud`` provider (``tests.fakes.httpprovider``, a loopback fake cloud whose
VMs outlive the adaptor) and ``TUNNEL_TYPE=fake`` (``tests.fakes.network``: no netns, real
VXLAN id allocator), then runs the real entry point.
"""

from __future__ import annotations

import sys

from adaptor import server
from adaptor.__main__ import main
from adaptor.config import AdaptorSettings
from adaptor.network.base import WorkerNetwork
from providers import registry
from tests.fakes.network import FakeWorkerNetwork

registry.PROVIDERS["fakecloud"] = registry.ProviderEntry(
    "fakecloud", "tests.fakes.httpprovider", None
)
_real_make_network = server.make_network


def _make_network(settings: AdaptorSettings) -> WorkerNetwork:
    if settings.tunnel_type == "fake":
        return FakeWorkerNetwork()
    return _real_make_network(settings)


server.make_network = _make_network

if __name__ == "__main__":
    sys.exit(main())
