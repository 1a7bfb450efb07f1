"""Our google.rpc.Status (the ttrpc Response's status) and googleapis-common-protos' one,
which the GCP SDK loads, must fit in one descriptor pool in either import order: protobuf
accepts a second registration of a file only when its descriptor is byte-identical."""

from __future__ import annotations

import subprocess
import sys

import pytest

ORDERS = [
    ("protocols.kata.status_pb2", "google.rpc.status_pb2"),
    ("google.rpc.status_pb2", "protocols.kata.status_pb2"),
]


@pytest.mark.parametrize("first,second", ORDERS)
def test_both_status_modules_load_in_one_process(first: str, second: str) -> None:
    pytest.importorskip("google.rpc.status_pb2")
    code = (
        f"import importlib; a = importlib.import_module({first!r}); "
        f"b = importlib.import_module({second!r}); "
        "assert a.DESCRIPTOR.serialized_pb == b.DESCRIPTOR.serialized_pb"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
