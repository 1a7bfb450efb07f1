"""``peerpodctl``: drive the cloud-api-adaptor as the Kata shim does, for people and scripts.

It speaks the shim's side of the remote hypervisor protocol on the adaptor's socket (a new
connection per call, as the shim makes), then the agent API through the per-pod socket the
adaptor returns. ``list``/``show`` read what the adaptor keeps in the pods dir.

    peerpodctl demo                      # create -> start -> check -> stop a throwaway pod VM
    peerpodctl create SID --pod web --namespace default
    peerpodctl start SID; peerpodctl check SID; peerpodctl stop SID
    peerpodctl list; peerpodctl show SID

Human output by default, ``--json`` for scripts. Exit status: 0 ok, 1 failed, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from adaptor import annotations as ann
from adaptor.config import DEFAULT_PODS_DIR, DEFAULT_SOCKET
from adaptor.sandbox import SOCKET_NAME
from protocols import initdata
from protocols.kata import health_pb2, hypervisor_pb2
from protocols.ttrpc import Client, Code, ConnectionClosed, TTRPCError
from protocols.ttrpc.server import Message
from runtime.errors import PeerPodsError

PROG = "peerpodctl"
HYPERVISOR = "hypervisor.Hypervisor"
DEFAULT_START_TIMEOUT = 600.0  # the shim's remote_hypervisor_timeout
CALL_TIMEOUT = 300.0
CHECK_TIMEOUT = 30.0  # the shim's first agent call deadline
REDACTED = "***"
_SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

Resp = TypeVar("Resp", bound=Message)
T = TypeVar("T")


class CtlError(PeerPodsError):
    """A failure to report to the user (one line, no traceback)."""


@dataclass(frozen=True, slots=True)
class Context:
    socket: str
    pods_dir: Path
    json: bool
    out: IO[str]
    err: IO[str]

    def emit(self, human: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True) if self.json else human
        self.out.write(text + "\n")
        self.out.flush()


# ------------------------------------------------------------------------- transport


async def _connect(path: str, what: str) -> Client:
    try:
        return await Client.connect_unix(path)
    except FileNotFoundError:
        if what == "adaptor":
            raise CtlError(
                f"no socket at {path}: the cloud-api-adaptor is not running. Start it, e.g. "
                "`cloud-api-adaptor local` (as root for pod networking; otherwise with "
                "TUNNEL_TYPE=none), or point --socket / REMOTE_HYPERVISOR_ENDPOINT at its "
                "socket"
            ) from None
        raise CtlError(f"no agent socket at {path}: is the pod VM started?") from None
    except ConnectionRefusedError:
        raise CtlError(f"{path} exists but nothing accepts connections: the {what} is not "
                       "running (a stale socket?)") from None
    except PermissionError:
        raise CtlError(f"permission denied on {path} (run as root?)") from None
    except OSError as exc:
        raise CtlError(f"cannot connect to {path}: {exc.strerror or exc}") from None


async def _call(
    path: str, what: str, service: str, method: str, request: Any, response: type[Resp],
    timeout: float | None,
) -> Resp:
    client = await _connect(path, what)
    async with client:
        try:
            return await client.call(service, method, request, response, timeout=timeout)
        except TTRPCError as exc:
            try:
                code = Code(exc.code).name
            except ValueError:
                code = str(exc.code)
            raise CtlError(f"{method} failed: {exc.message} ({code})") from None
        except ConnectionClosed:
            raise CtlError(f"the {what} closed the connection during {method}") from None


def _hypervisor(ctx: Context, method: str, request: Any, response: type[Resp],
                timeout: float | None = CALL_TIMEOUT) -> Awaitable[Resp]:
    return _call(ctx.socket, "adaptor", HYPERVISOR, method, request, response, timeout)


# ------------------------------------------------------------------------- builders


def read_initdata(path: str) -> str:
    """The initdata TOML to send: the file as is, or decoded if it holds the pod annotation
    form (``base64(gzip(toml))``), since the shim hands the adaptor plain TOML."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CtlError(f"cannot read initdata {path}: {exc.strerror or exc}") from None
    try:
        raw = initdata.decode(raw)
    except (ValueError, initdata.InitDataError):
        pass
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise CtlError(f"initdata {path} is neither TOML text nor base64(gzip(toml))") from None


def shim_annotations(
    *, pod: str, namespace: str, instance_type: str = "", image: str = "", vcpus: int = 0,
    memory_mib: int = 0, init_data: str = "", gpus: int = 0, gpu_model: str = "",
) -> dict[str, str]:
    """Exactly the keys the Kata shim sends with CreateVM, empty values included."""
    return {
        ann.SANDBOX_NAME: pod,
        ann.SANDBOX_NAMESPACE: namespace,
        ann.MACHINE_TYPE: instance_type,
        ann.IMAGE: image,
        ann.DEFAULT_VCPUS: str(vcpus),
        ann.DEFAULT_MEMORY: str(memory_mib),
        ann.INITDATA: init_data,
        ann.DEFAULT_GPUS: str(gpus),
        ann.GPU_MODEL: gpu_model,
    }


def _redact(value: Any, key: str = "") -> Any:
    lowered = key.lower()
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if isinstance(value, str) and value and (
        "key" in lowered or "user_data" in lowered or "user-data" in lowered
        or "PRIVATE KEY" in value
    ):
        return REDACTED
    return value


def _sandbox_dir(ctx: Context, sandbox_id: str) -> Path:
    if not _SANDBOX_ID.fullmatch(sandbox_id):
        raise CtlError(f"invalid sandbox id {sandbox_id!r}")
    return ctx.pods_dir / sandbox_id


def pod_dir_summary(directory: Path) -> dict[str, Any]:
    """What a pod dir holds: its files, JSON ones parsed (secrets redacted). Tolerant."""
    files: dict[str, Any] = {}
    summary: dict[str, Any] = {"sandbox_id": directory.name, "files": files}
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        summary["error"] = exc.strerror or str(exc)
        return summary
    for entry in entries:
        info: dict[str, Any] = {}
        try:
            if entry.is_socket():
                info["type"] = "socket"
            elif entry.is_file():
                info["type"] = "file"
                info["size"] = entry.stat().st_size
                if entry.suffix == ".json" and info["size"] <= 1 << 20:
                    info["content"] = _redact(json.loads(entry.read_text()))
            else:
                info["type"] = "other"
        except (OSError, ValueError) as exc:
            info["error"] = str(exc)
        files[entry.name] = info
    apf_json = files.get("apf.json", {}).get("content")
    if isinstance(apf_json, dict):
        summary["pod_name"] = apf_json.get("pod-name", "")
        summary["pod_namespace"] = apf_json.get("pod-namespace", "")
        network = apf_json.get("pod-network")
        if isinstance(network, dict):
            summary["tunnel"] = network.get("tunnel-type", "")
            summary["pod_ip"] = network.get("podip", "")
        summary["tls"] = bool(apf_json.get("tls-server-cert"))
    summary["agent_socket"] = str(directory / SOCKET_NAME) \
        if files.get(SOCKET_NAME, {}).get("type") == "socket" else ""
    return summary


# ------------------------------------------------------------------------- commands


async def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    init_data = read_initdata(args.initdata) if args.initdata else ""
    annotations = shim_annotations(
        pod=args.pod, namespace=args.namespace, instance_type=args.instance_type,
        image=args.image, vcpus=args.vcpus, memory_mib=args.memory, init_data=init_data,
        gpus=args.gpus, gpu_model=args.gpu_model,
    )
    request = hypervisor_pb2.CreateVMRequest(
        id=args.sandbox_id, annotations=annotations, networkNamespacePath=args.netns
    )
    reply = await _hypervisor(ctx, "CreateVM", request, hypervisor_pb2.CreateVMResponse)
    ctx.emit(f"sandbox {args.sandbox_id} created; agent socket {reply.agentSocketPath}",
             {"sandbox_id": args.sandbox_id, "agent_socket_path": reply.agentSocketPath})
    return 0


async def _with_progress(ctx: Context, label: str, work: Awaitable[T]) -> T:
    """Await ``work``; on a terminal (and without --json) show the seconds elapsed."""
    task = asyncio.ensure_future(work)
    if ctx.json or not ctx.err.isatty():
        return await task
    started = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                return task.result()
            ctx.err.write(f"\r{label}... {time.monotonic() - started:.0f}s")
            ctx.err.flush()
    finally:
        task.cancel()
        ctx.err.write("\r\033[K")
        ctx.err.flush()


async def cmd_start(ctx: Context, args: argparse.Namespace) -> int:
    started = time.monotonic()
    await _with_progress(ctx, f"starting the pod VM of sandbox {args.sandbox_id[:12]}",
                         _hypervisor(ctx, "StartVM",
                                     hypervisor_pb2.StartVMRequest(id=args.sandbox_id),
                                     hypervisor_pb2.StartVMResponse, timeout=args.timeout))
    seconds = round(time.monotonic() - started, 3)
    ctx.emit(f"sandbox {args.sandbox_id} started in {seconds:.1f}s",
             {"sandbox_id": args.sandbox_id, "started": True, "seconds": seconds})
    return 0


async def cmd_stop(ctx: Context, args: argparse.Namespace) -> int:
    await _hypervisor(ctx, "StopVM", hypervisor_pb2.StopVMRequest(id=args.sandbox_id),
                      hypervisor_pb2.StopVMResponse)
    ctx.emit(f"sandbox {args.sandbox_id} stopped",
             {"sandbox_id": args.sandbox_id, "stopped": True})
    return 0


async def _check(ctx: Context, sandbox_id: str) -> tuple[str, str]:
    path = str(_sandbox_dir(ctx, sandbox_id) / SOCKET_NAME)
    reply = await _call(path, "agent proxy", "grpc.Health", "Check",
                        health_pb2.CheckRequest(), health_pb2.HealthCheckResponse,
                        CHECK_TIMEOUT)
    return path, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    path, status = await _check(ctx, args.sandbox_id)
    ctx.emit(f"sandbox {args.sandbox_id}: agent {status} (via {path})",
             {"sandbox_id": args.sandbox_id, "status": status, "agent_socket_path": path})
    return 0 if status == "SERVING" else 1


async def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    reply = await _hypervisor(ctx, "Version", hypervisor_pb2.VersionRequest(version="0.0.0"),
                              hypervisor_pb2.VersionResponse)
    ctx.emit(f"adaptor version {reply.version}", {"version": reply.version})
    return 0


def _list(ctx: Context) -> list[dict[str, Any]]:
    try:
        entries = sorted(p for p in ctx.pods_dir.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CtlError(f"cannot read {ctx.pods_dir}: {exc.strerror or exc}") from None
    return [pod_dir_summary(entry) for entry in entries]


async def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    pods = await asyncio.to_thread(_list, ctx)
    lines = [f"{'SANDBOX':<14} {'NAMESPACE/POD':<40} {'TUNNEL':<7} SOCKET"]
    for pod in pods:
        who = f"{pod.get('pod_namespace') or '?'}/{pod.get('pod_name') or '?'}"
        lines.append(f"{pod['sandbox_id'][:12]:<14} {who:<40} {pod.get('tunnel') or '-':<7} "
                     f"{'yes' if pod['agent_socket'] else 'no'}")
    if not pods:
        lines = [f"no sandboxes in {ctx.pods_dir}"]
    ctx.emit("\n".join(lines), {"pods_dir": str(ctx.pods_dir), "sandboxes": pods})
    return 0


async def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    directory = _sandbox_dir(ctx, args.sandbox_id)
    if not await asyncio.to_thread(directory.is_dir):
        raise CtlError(f"no sandbox {args.sandbox_id} in {ctx.pods_dir}")
    summary = await asyncio.to_thread(pod_dir_summary, directory)
    lines = [f"sandbox:   {summary['sandbox_id']}",
             f"pod:       {summary.get('pod_namespace', '?')}/{summary.get('pod_name', '?')}",
             f"tunnel:    {summary.get('tunnel') or '-'}  pod ip: {summary.get('pod_ip') or '-'}",
             f"tls:       {'yes' if summary.get('tls') else 'no'}",
             f"agent:     {summary['agent_socket'] or '(no socket: not started)'}",
             "files:"]
    for name, info in summary["files"].items():
        size = f" {info['size']} bytes" if "size" in info else ""
        lines.append(f"  {name} ({info.get('type', '?')}{size})")
    ctx.emit("\n".join(lines), summary)
    return 0


async def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    sandbox_id = secrets.token_hex(32)
    pod = f"peerpodctl-demo-{sandbox_id[:6]}"
    steps: list[dict[str, Any]] = []

    def show(step: str, ok: bool, seconds: float, detail: str) -> None:
        steps.append({"step": step, "ok": ok, "seconds": round(seconds, 3), "detail": detail})
        if not ctx.json:
            ctx.out.write(f"{step:<7} {'ok' if ok else 'FAILED':<7} {seconds:7.2f}s  {detail}\n")
            ctx.out.flush()

    async def step(name: str, work: Awaitable[str]) -> bool:
        started = time.monotonic()
        try:
            detail = await work
        except CtlError as exc:
            show(name, False, time.monotonic() - started, str(exc))
            return False
        show(name, True, time.monotonic() - started, detail)
        return True

    async def create() -> str:
        request = hypervisor_pb2.CreateVMRequest(
            id=sandbox_id, networkNamespacePath=args.netns,
            annotations=shim_annotations(pod=pod, namespace=args.namespace),
        )
        reply = await _hypervisor(ctx, "CreateVM", request, hypervisor_pb2.CreateVMResponse)
        if not reply.agentSocketPath:
            raise CtlError("the adaptor returned no agent socket path")
        return f"sandbox {sandbox_id[:12]} for pod {args.namespace}/{pod}"

    async def start() -> str:
        await _with_progress(ctx, "starting the pod VM", _hypervisor(
            ctx, "StartVM", hypervisor_pb2.StartVMRequest(id=sandbox_id),
            hypervisor_pb2.StartVMResponse, timeout=args.timeout))
        return "pod VM up, forwarder reached"

    async def check() -> str:
        path, status = await _check(ctx, sandbox_id)
        if status != "SERVING":
            raise CtlError(f"agent answered {status}")
        return f"agent {status} through {path}"

    async def stop() -> str:
        await _hypervisor(ctx, "StopVM", hypervisor_pb2.StopVMRequest(id=sandbox_id),
                          hypervisor_pb2.StopVMResponse)
        return "pod VM deleted"

    if not ctx.json:
        ctx.out.write(f"demo pod {args.namespace}/{pod} via {ctx.socket}\n")
    ok = await step("create", create())
    if ok:
        ok = await step("start", start()) and await step("check", check())
        ok = await step("stop", stop()) and ok  # always clean up what create made
    ctx.emit("demo passed" if ok else "demo FAILED",
             {"sandbox_id": sandbox_id, "pod": pod, "namespace": args.namespace,
              "ok": ok, "steps": steps})
    return 0 if ok else 1


# ------------------------------------------------------------------------- command line


def _sandbox_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sandbox_id", metavar="SANDBOX_ID", help="sandbox id (64 hex chars)")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Drive the cloud-api-adaptor as the Kata shim does.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--socket", default=env.get("REMOTE_HYPERVISOR_ENDPOINT") or DEFAULT_SOCKET,
        help="the adaptor's hypervisor socket [env REMOTE_HYPERVISOR_ENDPOINT] "
        f"(default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--pods-dir", default=env.get("PODS_DIR") or DEFAULT_PODS_DIR,
        help=f"the adaptor's pods dir [env PODS_DIR] (default {DEFAULT_PODS_DIR})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = sub.add_parser("create", help="CreateVM with the shim's annotations")
    _sandbox_arg(create)
    create.add_argument("--pod", required=True, help="pod name")
    create.add_argument("--namespace", required=True, help="pod namespace")
    create.add_argument("--netns", default="", help="the pod's network namespace path")
    create.add_argument("--vcpus", type=int, default=0, help="default_vcpus annotation")
    create.add_argument("--memory", type=int, default=0, metavar="MIB",
                        help="default_memory annotation (MiB)")
    create.add_argument("--instance-type", default="", help="machine_type annotation")
    create.add_argument("--image", default="", help="image annotation")
    create.add_argument("--gpus", type=int, default=0, help="default_gpus annotation")
    create.add_argument("--gpu-model", default="", help="default_gpu_model annotation")
    create.add_argument("--initdata", metavar="FILE",
                        help="initdata TOML (or its base64(gzip) annotation form)")
    create.set_defaults(run=cmd_create)

    start = sub.add_parser("start", help="StartVM: create the pod VM and wait for it")
    _sandbox_arg(start)
    start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT,
                       help=f"seconds (default {DEFAULT_START_TIMEOUT:g}, as the shim)")
    start.set_defaults(run=cmd_start)

    for name, run, text in (
        ("stop", cmd_stop, "StopVM: delete the pod VM"),
        ("check", cmd_check, "grpc.Health/Check through the pod's agent socket"),
        ("show", cmd_show, "what the pods dir holds for a sandbox"),
    ):
        command = sub.add_parser(name, help=text)
        _sandbox_arg(command)
        command.set_defaults(run=run)
    sub.add_parser("list", help="sandboxes in the pods dir").set_defaults(run=cmd_list)
    sub.add_parser("version", help="the adaptor's Version").set_defaults(run=cmd_version)

    demo = sub.add_parser("demo", help="create -> start -> check -> stop a throwaway pod VM")
    demo.add_argument("--namespace", default="default", help="pod namespace")
    demo.add_argument("--netns", default="", help="a network namespace path for the pod")
    demo.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT,
                      help="StartVM timeout in seconds")
    demo.set_defaults(run=cmd_demo)
    return parser


async def run(
    argv: Sequence[str], *, env: Mapping[str, str], out: IO[str], err: IO[str]
) -> int:
    """Run one command (the testable core of :func:`main`)."""
    parser = build_parser(env)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    ctx = Context(socket=args.socket, pods_dir=Path(args.pods_dir), json=args.json,
                  out=out, err=err)
    try:
        code: int = await args.run(ctx, args)
    except CtlError as exc:
        if ctx.json:
            out.write(json.dumps({"error": str(exc)}) + "\n")
        err.write(f"{PROG}: {exc}\n")
        return 1
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv, env=os.environ,
                               out=sys.stdout, err=sys.stderr))
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
