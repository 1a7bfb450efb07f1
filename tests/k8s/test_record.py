"""The sandbox record keeps the PeerPod's name, backward-compatibly: a version 2 record
written before the field existed reads as having none, and the field round-trips."""

from __future__ import annotations

import json

from adaptor.record import RECORD_VERSION, SandboxRecord
from tests.adaptor.test_sandbox_record import V1_RECORD


def test_peerpod_name_round_trips_and_older_records_have_none() -> None:
    record = SandboxRecord.from_json(V1_RECORD)
    assert record.peerpod == ""
    data = json.loads(record.replace(peerpod="web-resource-abcde").to_json())
    assert data["version"] == RECORD_VERSION and data["peerpod"] == "web-resource-abcde"
    assert SandboxRecord.from_dict(data).peerpod == "web-resource-abcde"
    del data["peerpod"]  # as written before the field existed
    assert SandboxRecord.from_dict(data).peerpod == ""
