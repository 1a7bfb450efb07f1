"""peerpodctl against a fake adaptor: a real ttrpc server on a tmp socket that records calls."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adaptor import ctl
from protocols import initdata
from protocols.kata import hypervisor_pb2
from protocols.ttrpc import CallContext, Code, Method, Server, TTRPCError
from providers.local.devagent import DevAgent

SHIM_KEYS = {
    "io.kubernetes.cri.sandbox-name",
    "io.kubernetes.cri.sandbox-namespace",
    "io.katacontainers.config.hypervisor.machine_type",
    "io.katacontainers.config.hypervisor.image",
    "io.katacontainers.config.hypervisor.default_vcpus",
    "io.katacontainers.config.hypervisor.default_memory",
    "io.katacontainers.config.hypervisor.cc_init_data",
    "io.katacontainers.config.hypervisor.default_gpus",
    "io.katacontainers.config.hypervisor.default_gpu_model",
}
TOML = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"aa.toml" = \'\'\n'


@dataclass
class FakeAdaptor:
    """The adaptor's hypervisor service; StartVM opens a real agent socket in the pods dir."""

    socket: str
    pods_dir: Path
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    fail_start: bool = False
    agents: dict[str, Server] = field(default_factory=dict)

    def register(self, server: Server) -> None:
        server.register_service("hypervisor.Hypervisor", {
            "CreateVM": Method(self.create, hypervisor_pb2.CreateVMRequest,
                               hypervisor_pb2.CreateVMResponse),
            "StartVM": Method(self.start, hypervisor_pb2.StartVMRequest,
                              hypervisor_pb2.StartVMResponse),
            "StopVM": Method(self.stop, hypervisor_pb2.StopVMRequest,
                             hypervisor_pb2.StopVMResponse),
            "Version": Method(self.version, hypervisor_pb2.VersionRequest,
                              hypervisor_pb2.VersionResponse),
        })

    async def create(self, req: Any, ctx: CallContext) -> Any:
        self.calls.append(("CreateVM", req))
        pod_dir = self.pods_dir / req.id
        pod_dir.mkdir(parents=True)
        (pod_dir / "apf.json").write_text(json.dumps({
            "pod-network": {"tunnel-type": "none", "podip": "10.244.0.9/24"},
            "pod-namespace": req.annotations["io.kubernetes.cri.sandbox-namespace"],
            "pod-name": req.annotations["io.kubernetes.cri.sandbox-name"],
            "tls-server-cert": "-----BEGIN CERTIFICATE-----\n...",
            "tls-server-key": "-----BEGIN PRIVATE KEY-----\nsecret\n",
        }))
        return hypervisor_pb2.CreateVMResponse(agentSocketPath=str(pod_dir / "agent.ttrpc"))

    async def start(self, req: Any, ctx: CallContext) -> Any:
        self.calls.append(("StartVM", req, ctx.timeout_nano))
        if self.fail_start:
            raise TTRPCError(Code.UNKNOWN, "creating an instance : quota exceeded")
        agent = Server()
        DevAgent().register(agent)
        await agent.start_unix(str(self.pods_dir / req.id / "agent.ttrpc"))
        self.agents[req.id] = agent
        return hypervisor_pb2.StartVMResponse()

    async def stop(self, req: Any, ctx: CallContext) -> Any:
        self.calls.append(("StopVM", req))
        agent = self.agents.pop(req.id, None)
        if agent is not None:
            await agent.shutdown(grace=0)
            os.unlink(self.pods_dir / req.id / "agent.ttrpc")
        return hypervisor_pb2.StopVMResponse()

    async def version(self, req: Any, ctx: CallContext) -> Any:
        return hypervisor_pb2.VersionResponse(version="0.0.0")


@pytest.fixture
async def adaptor() -> AsyncIterator[FakeAdaptor]:
    # Short on purpose: agent sockets under <pods>/<64-hex sid>/ must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ppc-"))
    fake = FakeAdaptor(str(root / "hypervisor.sock"), root / "pods")
    server = Server()
    fake.register(server)
    await server.start_unix(fake.socket)
    yield fake
    for agent in fake.agents.values():
        await agent.shutdown(grace=0)
    await server.shutdown(grace=0)
    shutil.rmtree(root, ignore_errors=True)


async def run(fake: FakeAdaptor, *argv: str, json_out: bool = False
              ) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = ["--json"] if json_out else []
    env = {"REMOTE_HYPERVISOR_ENDPOINT": fake.socket, "PODS_DIR": str(fake.pods_dir)}
    code = await ctl.run([*args, *argv], env=env, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_create_sends_exactly_the_shims_annotations(adaptor: FakeAdaptor) -> None:
    sid = secrets.token_hex(32)
    code, out, _ = await run(adaptor, "create", sid, "--pod", "web", "--namespace", "prod",
                             json_out=True)
    assert code == 0
    assert json.loads(out) == {"sandbox_id": sid,
                               "agent_socket_path": str(adaptor.pods_dir / sid / "agent.ttrpc")}
    [(_, request)] = [(c[0], c[1]) for c in adaptor.calls]
    assert request.id == sid
    assert set(request.annotations) == SHIM_KEYS
    assert dict(request.annotations) == {
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "prod",
        "io.katacontainers.config.hypervisor.machine_type": "",
        "io.katacontainers.config.hypervisor.image": "",
        "io.katacontainers.config.hypervisor.default_vcpus": "0",
        "io.katacontainers.config.hypervisor.default_memory": "0",
        "io.katacontainers.config.hypervisor.cc_init_data": "",
        "io.katacontainers.config.hypervisor.default_gpus": "0",
        "io.katacontainers.config.hypervisor.default_gpu_model": "",
    }
    assert request.networkNamespacePath == ""


@pytest.mark.parametrize("encoded", [False, True])
async def test_create_with_every_option(adaptor: FakeAdaptor, tmp_path: Path,
                                        encoded: bool) -> None:
    init_file = tmp_path / "initdata"
    init_file.write_text(initdata.encode(TOML) if encoded else TOML)
    sid = secrets.token_hex(32)
    code, out, err = await run(
        adaptor, "create", sid, "--pod", "web", "--namespace", "prod", "--netns",
        "/var/run/netns/cni-1", "--vcpus", "2", "--memory", "4096", "--instance-type",
        "m6a.large", "--image", "ami-1", "--gpus", "1", "--gpu-model", "a100",
        "--initdata", str(init_file))
    assert code == 0, err
    assert f"sandbox {sid} created" in out
    request = adaptor.calls[0][1]
    assert set(request.annotations) == SHIM_KEYS
    hv = "io.katacontainers.config.hypervisor."
    assert request.annotations[hv + "default_vcpus"] == "2"
    assert request.annotations[hv + "default_memory"] == "4096"
    assert request.annotations[hv + "machine_type"] == "m6a.large"
    assert request.annotations[hv + "image"] == "ami-1"
    assert request.annotations[hv + "default_gpus"] == "1"
    assert request.annotations[hv + "default_gpu_model"] == "a100"
    assert request.annotations[hv + "cc_init_data"] == TOML  # plain TOML, as the shim sends
    assert request.networkNamespacePath == "/var/run/netns/cni-1"


async def test_lifecycle_json_outputs(adaptor: FakeAdaptor) -> None:
    sid = secrets.token_hex(32)
    assert (await run(adaptor, "create", sid, "--pod", "web", "--namespace", "prod"))[0] == 0
    code, out, _ = await run(adaptor, "start", sid, "--timeout", "42", json_out=True)
    assert code == 0 and json.loads(out)["started"] is True
    assert adaptor.calls[-1][2] == 42_000_000_000  # timeout_nano on the wire
    code, out, _ = await run(adaptor, "check", sid, json_out=True)
    assert code == 0 and json.loads(out)["status"] == "SERVING"
    code, out, _ = await run(adaptor, "list", json_out=True)
    [pod] = json.loads(out)["sandboxes"]
    assert (pod["sandbox_id"], pod["pod_name"], pod["pod_namespace"]) == (sid, "web", "prod")
    assert pod["agent_socket"].endswith("agent.ttrpc")
    code, out, _ = await run(adaptor, "show", sid, json_out=True)
    shown = json.loads(out)
    assert shown["files"]["apf.json"]["content"]["tls-server-key"] == "***"
    assert "secret" not in out
    code, out, _ = await run(adaptor, "show", sid)
    assert "prod/web" in out and "secret" not in out
    code, out, _ = await run(adaptor, "stop", sid, json_out=True)
    assert code == 0 and json.loads(out) == {"sandbox_id": sid, "stopped": True}
    code, out, _ = await run(adaptor, "version", json_out=True)
    assert json.loads(out) == {"version": "0.0.0"}


async def test_demo_runs_every_step(adaptor: FakeAdaptor) -> None:
    code, out, err = await run(adaptor, "demo", json_out=True)
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True
    assert [s["step"] for s in result["steps"]] == ["create", "start", "check", "stop"]
    assert [c[0] for c in adaptor.calls] == ["CreateVM", "StartVM", "StopVM"]
    code, out, _ = await run(adaptor, "demo")
    assert code == 0 and "demo passed" in out and "check   ok" in out


async def test_demo_cleans_up_after_a_failed_start(adaptor: FakeAdaptor) -> None:
    adaptor.fail_start = True
    code, out, _ = await run(adaptor, "demo", json_out=True)
    assert code == 1
    result = json.loads(out)
    assert [(s["step"], s["ok"]) for s in result["steps"]] == [
        ("create", True), ("start", False), ("stop", True)]
    assert "quota exceeded (UNKNOWN)" in result["steps"][1]["detail"]


async def test_adaptor_error_is_reported(adaptor: FakeAdaptor) -> None:
    adaptor.fail_start = True
    code, _, err = await run(adaptor, "start", "abc")
    assert code == 1
    assert err == "peerpodctl: StartVM failed: creating an instance : quota exceeded (UNKNOWN)\n"


async def test_missing_socket_says_the_adaptor_is_not_running(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await ctl.run(["--socket", str(tmp_path / "none.sock"), "stop", "abc"],
                         env={}, out=out, err=err)
    assert code == 1
    assert "cloud-api-adaptor is not running" in err.getvalue()
    assert "REMOTE_HYPERVISOR_ENDPOINT" in err.getvalue()
    code = await ctl.run(["--json", "--socket", str(tmp_path / "none.sock"), "version"],
                         env={}, out=out, err=err)
    assert "not running" in json.loads(out.getvalue().splitlines()[-1])["error"]


async def test_check_without_agent_socket(adaptor: FakeAdaptor) -> None:
    code, _, err = await run(adaptor, "check", "abc")
    assert code == 1 and "no agent socket" in err


async def test_list_and_show_are_tolerant(adaptor: FakeAdaptor) -> None:
    code, out, _ = await run(adaptor, "list")
    assert code == 0 and "no sandboxes" in out
    weird = adaptor.pods_dir / "weird"
    weird.mkdir(parents=True)
    (weird / "apf.json").write_text("{not json")
    (weird / "notes.txt").write_text("hello")
    code, out, _ = await run(adaptor, "show", "weird", json_out=True)
    assert code == 0
    files = json.loads(out)["files"]
    assert "error" in files["apf.json"] and files["notes.txt"]["size"] == 5
    code, _, err = await run(adaptor, "show", "../etc")
    assert code == 1 and "invalid sandbox id" in err
    code, _, err = await run(adaptor, "show", "missing")
    assert code == 1 and "no sandbox missing" in err


async def test_usage_errors_exit_2(adaptor: FakeAdaptor) -> None:
    code, _, _ = await run(adaptor, "create", "abc")  # --pod/--namespace missing
    assert code == 2
