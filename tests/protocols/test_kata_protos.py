"""The generated Kata protobuf modules: fresh, wire-identical to upstream, importable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from protocols.kata import (
    agent_pb2,
    health_pb2,
    hypervisor_pb2,
    oci_pb2,
    podvminfo_pb2,
    status_pb2,
)

ROOT = Path(__file__).resolve().parents[2]
KATA = ROOT / "protocols" / "kata"

EMPTY = "google.protobuf.Empty"

# PROTOCOLS.md §3.1: the 42 grpc.AgentService methods, with their input and output types.
AGENT_METHODS: dict[str, tuple[str, str]] = {
    "CreateContainer": ("grpc.CreateContainerRequest", EMPTY),
    "StartContainer": ("grpc.StartContainerRequest", EMPTY),
    "RemoveContainer": ("grpc.RemoveContainerRequest", EMPTY),
    "ExecProcess": ("grpc.ExecProcessRequest", EMPTY),
    "SignalProcess": ("grpc.SignalProcessRequest", EMPTY),
    "WaitProcess": ("grpc.WaitProcessRequest", "grpc.WaitProcessResponse"),
    "UpdateContainer": ("grpc.UpdateContainerRequest", EMPTY),
    "UpdateEphemeralMounts": ("grpc.UpdateEphemeralMountsRequest", EMPTY),
    "StatsContainer": ("grpc.StatsContainerRequest", "grpc.StatsContainerResponse"),
    "PauseContainer": ("grpc.PauseContainerRequest", EMPTY),
    "ResumeContainer": ("grpc.ResumeContainerRequest", EMPTY),
    "RemoveStaleVirtiofsShareMounts": ("grpc.RemoveStaleVirtiofsShareMountsRequest", EMPTY),
    "GetDiagnosticData": ("grpc.GetDiagnosticDataRequest", "grpc.GetDiagnosticDataResponse"),
    "WriteStdin": ("grpc.WriteStreamRequest", "grpc.WriteStreamResponse"),
    "ReadStdout": ("grpc.ReadStreamRequest", "grpc.ReadStreamResponse"),
    "ReadStderr": ("grpc.ReadStreamRequest", "grpc.ReadStreamResponse"),
    "CloseStdin": ("grpc.CloseStdinRequest", EMPTY),
    "TtyWinResize": ("grpc.TtyWinResizeRequest", EMPTY),
    "UpdateInterface": ("grpc.UpdateInterfaceRequest", "types.Interface"),
    "UpdateRoutes": ("grpc.UpdateRoutesRequest", "grpc.Routes"),
    "ListInterfaces": ("grpc.ListInterfacesRequest", "grpc.Interfaces"),
    "ListRoutes": ("grpc.ListRoutesRequest", "grpc.Routes"),
    "AddARPNeighbors": ("grpc.AddARPNeighborsRequest", EMPTY),
    "GetIPTables": ("grpc.GetIPTablesRequest", "grpc.GetIPTablesResponse"),
    "SetIPTables": ("grpc.SetIPTablesRequest", "grpc.SetIPTablesResponse"),
    "GetMetrics": ("grpc.GetMetricsRequest", "grpc.Metrics"),
    "MemAgentMemcgSet": ("grpc.MemAgentMemcgConfig", EMPTY),
    "MemAgentCompactSet": ("grpc.MemAgentCompactConfig", EMPTY),
    "CreateSandbox": ("grpc.CreateSandboxRequest", EMPTY),
    "DestroySandbox": ("grpc.DestroySandboxRequest", EMPTY),
    "OnlineCPUMem": ("grpc.OnlineCPUMemRequest", EMPTY),
    "ReseedRandomDev": ("grpc.ReseedRandomDevRequest", EMPTY),
    "GetGuestDetails": ("grpc.GuestDetailsRequest", "grpc.GuestDetailsResponse"),
    "MemHotplugByProbe": ("grpc.MemHotplugByProbeRequest", EMPTY),
    "SetGuestDateTime": ("grpc.SetGuestDateTimeRequest", EMPTY),
    "CopyFile": ("grpc.CopyFileRequest", EMPTY),
    "GetOOMEvent": ("grpc.GetOOMEventRequest", "grpc.OOMEvent"),
    "AddSwap": ("grpc.AddSwapRequest", EMPTY),
    "AddSwapPath": ("grpc.AddSwapPathRequest", EMPTY),
    "GetVolumeStats": ("grpc.VolumeStatsRequest", "grpc.VolumeStatsResponse"),
    "ResizeVolume": ("grpc.ResizeVolumeRequest", EMPTY),
    "SetPolicy": ("grpc.SetPolicyRequest", EMPTY),
}


def test_generated_code_is_current(tmp_path: Path) -> None:
    out = tmp_path / "kata"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-protos"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = {p.name: p.read_text() for p in out.glob("*_pb2.py*")}
    committed = {p.name: p.read_text() for p in KATA.glob("*_pb2.py*")}
    assert sorted(fresh) == sorted(committed), "generated file set differs: run scripts/gen-protos"
    stale = [name for name in sorted(fresh) if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run scripts/gen-protos"


def test_agent_service_has_the_42_methods_with_their_types() -> None:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert service.full_name == "grpc.AgentService"
    assert len(AGENT_METHODS) == 42
    seen = {
        m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods
    }
    assert seen == AGENT_METHODS
    assert all(not m.client_streaming and not m.server_streaming for m in service.methods)


@pytest.mark.parametrize(
    ("descriptor", "service", "methods"),
    [
        (
            hypervisor_pb2.DESCRIPTOR,
            "hypervisor.Hypervisor",
            {
                "CreateVM": ("hypervisor.CreateVMRequest", "hypervisor.CreateVMResponse"),
                "StartVM": ("hypervisor.StartVMRequest", "hypervisor.StartVMResponse"),
                "StopVM": ("hypervisor.StopVMRequest", "hypervisor.StopVMResponse"),
                "Version": ("hypervisor.VersionRequest", "hypervisor.VersionResponse"),
            },
        ),
        (
            health_pb2.DESCRIPTOR,
            "grpc.Health",
            {
                "Check": ("grpc.CheckRequest", "grpc.HealthCheckResponse"),
                "Version": ("grpc.CheckRequest", "grpc.VersionCheckResponse"),
            },
        ),
        (
            podvminfo_pb2.DESCRIPTOR,
            "podvminfo.PodVMInfo",
            {"GetInfo": ("podvminfo.GetInfoRequest", "podvminfo.GetInfoResponse")},
        ),
    ],
)
def test_service_names_and_methods(
    descriptor: object, service: str, methods: dict[str, tuple[str, str]]
) -> None:
    name = service.rsplit(".", 1)[1]
    svc = descriptor.services_by_name[name]  # type: ignore[attr-defined]
    assert svc.full_name == service
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in svc.methods} == (
        methods
    )


def _fields(message: type) -> dict[str, tuple[int, int]]:
    """name -> (number, descriptor type) for a generated message class."""
    return {f.name: (f.number, f.type) for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


T = descriptor_pb2.FieldDescriptorProto
STRING, MESSAGE, BOOL, UINT32 = T.TYPE_STRING, T.TYPE_MESSAGE, T.TYPE_BOOL, T.TYPE_UINT32


def test_hypervisor_field_numbers() -> None:
    assert _fields(hypervisor_pb2.CreateVMRequest) == {
        "id": (1, STRING),
        "annotations": (2, MESSAGE),  # map<string,string>: repeated entry messages
        "networkNamespacePath": (3, STRING),
    }
    assert _fields(hypervisor_pb2.CreateVMResponse) == {"agentSocketPath": (1, STRING)}
    assert _fields(podvminfo_pb2.GetInfoRequest) == {
        "PodName": (1, STRING),
        "PodNamespace": (2, STRING),
        "Wait": (3, BOOL),
    }
    assert _fields(podvminfo_pb2.GetInfoResponse) == {"VMID": (1, STRING)}


def test_create_container_and_oci_field_numbers() -> None:
    ccr = _fields(agent_pb2.CreateContainerRequest)
    assert ccr == {
        "container_id": (1, STRING),
        "exec_id": (2, STRING),
        "string_user": (3, MESSAGE),
        "devices": (4, MESSAGE),
        "storages": (5, MESSAGE),
        "OCI": (6, MESSAGE),
        "sandbox_pidns": (7, BOOL),
        "shared_mounts": (8, MESSAGE),
        "stdin_port": (9, UINT32),
        "stdout_port": (10, UINT32),
        "stderr_port": (11, UINT32),
    }
    oci_field = agent_pb2.CreateContainerRequest.DESCRIPTOR.fields_by_name["OCI"]
    assert oci_field.message_type.full_name == "grpc.Spec"
    spec = _fields(oci_pb2.Spec)
    assert spec["Version"] == (1, STRING)
    assert spec["Mounts"] == (5, MESSAGE)
    assert spec["Annotations"] == (7, MESSAGE)
    assert spec["Linux"] == (8, MESSAGE)
    linux = oci_pb2.Linux.DESCRIPTOR.fields_by_name
    assert linux["CgroupsPath"].number == 5
    assert linux["Namespaces"].number == 6
    assert linux["Namespaces"].message_type.full_name == "grpc.LinuxNamespace"
    assert _fields(oci_pb2.LinuxNamespace) == {"Type": (1, STRING), "Path": (2, STRING)}
    assert _fields(agent_pb2.CreateSandboxRequest)["dns"] == (2, STRING)


def test_byte_example_c_create_vm_payload() -> None:
    """PROTOCOLS.md §1.9 example C: the 60-byte CreateVM payload, both ways."""
    expected = bytes.fromhex(
        "0a03" + b"sb1".hex()
        + "1223" + "0a1e" + b"io.kubernetes.cri.sandbox-name".hex() + "1201" + b"p".hex()
        + "1a10" + b"/var/run/netns/x".hex()
    )
    assert len(expected) == 0x3C
    request = hypervisor_pb2.CreateVMRequest(
        id="sb1",
        annotations={"io.kubernetes.cri.sandbox-name": "p"},
        networkNamespacePath="/var/run/netns/x",
    )
    assert request.SerializeToString() == expected
    decoded = hypervisor_pb2.CreateVMRequest.FromString(expected)
    assert decoded == request


def test_other_byte_examples() -> None:
    """Example B's StartVM payload and example D's HealthCheckResponse{SERVING}."""
    start = hypervisor_pb2.StartVMRequest(id="abc")
    assert start.SerializeToString() == bytes.fromhex("0a03616263")
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert serving.SerializeToString() == bytes.fromhex("0801")
    assert health_pb2.CheckRequest(service="").SerializeToString() == b""
    status = status_pb2.Status(code=5, message="not found")
    assert status.SerializeToString() == bytes.fromhex("08051209") + b"not found"


def test_status_descriptor_is_the_well_known_one() -> None:
    assert status_pb2.DESCRIPTOR.name == "google/rpc/status.proto"
    assert status_pb2.DESCRIPTOR.package == "google.rpc"
    assert _fields(status_pb2.Status) == {
        "code": (1, T.TYPE_INT32),
        "message": (2, STRING),
        "details": (3, MESSAGE),
    }


def test_generated_modules_import_as_a_package() -> None:
    """Cross-file imports resolve to protocols.kata modules (no top-level oci_pb2 etc.)."""
    for name in ("oci_pb2", "csi_pb2", "types_pb2", "agent_pb2"):
        assert name not in sys.modules, f"{name} was imported as a top-level module"
    ns = agent_pb2.CreateContainerRequest.DESCRIPTOR.fields_by_name["OCI"].message_type
    assert ns.file.name == "oci.proto"
