"""The agent data path in one run: a Go ttrpc client (the shim) and a Go ttrpc agent, three ways.

    .venv/bin/python benchmarks/datapath_bench.py [--calls 5000] [--rounds 200]

Rows:

* direct, Go to Go: the client talks to the agent's unix socket;
* two Go byte relays (no TLS): ``ttrpc-peer relay`` twice, roughly upstream's proxy and
  forwarder without TLS;
* two Go relays (mTLS over TCP): the same with the middle hop over TCP and mutual TLS with
  Go's default settings, laid out as the proxy and the forwarder are (upstream's cost);
* proxy + forwarder with mTLS: this project's :class:`adaptor.proxy.AgentProxy` (in its own
  process, as in the adaptor) dialling the real ``agent-protocol-forwarder`` over TCP + mTLS.

For each row: grpc.Health/Check p50/p99 of sequential calls; 20 concurrent Checks while one
WaitProcess blocks on the same connection (p50/p99 and wall time per round of 20); ReadStdout
of 16 MiB in 1 MiB calls (best of 5, MB/s). Ratios are to the direct row of the same run.
``--plain`` adds a fourth row, proxy + forwarder without TLS (the forwarder with
``-disable-tls``), to tell the cost of TLS from the cost of the relays. ``--floor`` adds
the thinnest relay CPython can run (``benchmarks/floor_relay.py``: two threads per hop doing
``recv_into``/``sendall``, nothing else) in the hops' places, with mTLS (and without, with
``--plain``): the floor under any Python relay on the machine. The CPU time each hop
used during its row is printed after the table.
Go programs: tests/interop/go/bin/ttrpc-peer (built by .ci/setup.d/20-go-interop.sh).
With ``--profile-dir DIR`` py-spy (if installed) samples the proxy and the forwarder during the
measurements and leaves their collapsed stacks there (``proxy.txt``, ``forwarder.txt``);
``DATAPATH_SPY_FLAGS=--native`` adds native frames (system calls) to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from runtime import aio
from tests.forwarder.apf.helpers import SERVER_NAME, Pki, make_pki

_SPY_EXTRA = os.environ.get("DATAPATH_SPY_FLAGS", "").split()  # e.g. --native
FLOOR = Path(__file__).resolve().parent / "floor_relay.py"
PEER = Path(__file__).resolve().parent.parent / "tests" / "interop" / "go" / "bin" / "ttrpc-peer"


def _wait_path(path: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not create {path}")
        time.sleep(0.01)


def _client(address: str, calls: int, rounds: int) -> dict[str, float]:
    out = subprocess.run(
        [str(PEER), "datapath-client", "--address", address, "--calls", str(calls),
         "--rounds", str(rounds)], check=True, capture_output=True, timeout=600)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _spy(pid: int, profile: Path | None, name: str) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` with py-spy until SIGINT; collapsed stacks go to ``<profile>/<name>.txt``."""
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if profile is None or spy is None:
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "-r", "500", "-f", "raw",
                             *_SPY_EXTRA, "-o", str(profile / f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _unspy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def _print_profile(path: Path, top: int = 8) -> None:
    """Self time per function from py-spy's collapsed stacks (``frame;frame;... count``)."""
    if not path.exists():
        return
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1].split(" (")[0]
        own[leaf] = own.get(leaf, 0) + int(samples)
        total += int(samples)
    print(f"{path.stem}: {total} samples, self time")
    for name, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"  {100 * count / total:5.1f}%  {name}")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _forwarder(tmp: str, pki: Pki, agent: str,
               tls: bool = True) -> tuple[subprocess.Popen[bytes], int]:
    config = Path(tmp) / ("apf.json" if tls else "apf-plain.json")
    config.write_text(pki.apf_json())
    notify_path = str(Path(tmp) / ("notify.sock" if tls else "notify-plain.sock"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "forwarder.apf_main", "-config", str(config), "-listen",
         "127.0.0.1:0", "-kata-agent-socket", agent, *([] if tls else ["-disable-tls"])],
        env=dict(os.environ, NOTIFY_SOCKET=notify_path), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        ready = notify.recv(4096).decode()
    finally:
        notify.close()
    return proc, int(ready.rsplit(":", 1)[1])


async def _proxy_main(socket_path: str, port: int, pem_dir: str) -> None:
    from adaptor.proxy import AgentProxy
    from adaptor.proxy.dialer import ForwarderDialer
    from runtime.tlsprofile import client_context

    pems = Path(pem_dir)
    context = None
    if (pems / "client.crt").exists():  # else the forwarder runs with -disable-tls
        context = client_context((pems / "client.crt").read_text(),
                                 (pems / "client.key").read_text(),
                                 (pems / "ca.crt").read_text())
    dialer = ForwarderDialer("bench", "127.0.0.1", port, context, SERVER_NAME)
    proxy = AgentProxy("bench", socket_path, dialer, proxy_timeout=30)
    await proxy.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await proxy.aclose()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _row_python(tmp: str, agent: str, args: argparse.Namespace,
                tls: bool = True) -> dict[str, float]:
    pki = make_pki()
    profile = Path(args.profile_dir) if args.profile_dir and tls else None
    forwarder, port = _forwarder(tmp, pki, agent, tls)
    pems = Path(tmp) / ("pems" if tls else "no-pems")
    pems.mkdir()
    if tls:
        (pems / "client.crt").write_text(pki.client.cert_pem)
        (pems / "client.key").write_text(pki.client.key_pem)
        (pems / "ca.crt").write_text(pki.ca.cert_pem)
    sock = str(Path(tmp) / ("proxy" if tls else "proxy-plain") / "agent.ttrpc")
    proxy = subprocess.Popen([sys.executable, __file__, "--serve-proxy", sock, str(port),
                              str(pems)], stdout=subprocess.DEVNULL)
    spies = []
    try:
        _wait_path(sock, proxy, "agent proxy")
        spies = [_spy(proxy.pid, profile, "proxy"), _spy(forwarder.pid, profile, "forwarder")]
        return _measure(sock, proxy, forwarder, args)
    finally:
        for spy in spies:
            _unspy(spy)
        _stop(proxy)
        _stop(forwarder)


def bench(args: argparse.Namespace) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="datapath-bench-") as tmp:
        agent = str(Path(tmp) / "agent.sock")
        try:
            procs.append(subprocess.Popen([str(PEER), "agent-bench-server", "--address",
                                           f"unix:{agent}"]))
            _wait_path(agent, procs[-1], "Go agent")
            rows.append(("direct, Go to Go", _client(f"unix:{agent}", args.calls, args.rounds)))
            hop1, hop2 = str(Path(tmp) / "relay1.sock"), str(Path(tmp) / "relay2.sock")
            procs.append(subprocess.Popen([str(PEER), "relay", "--address", f"unix:{hop2}",
                                           "--upstream", f"unix:{agent}"]))
            _wait_path(hop2, procs[-1], "Go relay")
            procs.append(subprocess.Popen([str(PEER), "relay", "--address", f"unix:{hop1}",
                                           "--upstream", f"unix:{hop2}"]))
            _wait_path(hop1, procs[-1], "Go relay")
            cpu = _cpu(procs[-1].pid), _cpu(procs[-2].pid)
            relays = _client(f"unix:{hop1}", args.calls, args.rounds)
            relays["proxy_cpu_s"] = _cpu(procs[-1].pid) - cpu[0]
            relays["forwarder_cpu_s"] = _cpu(procs[-2].pid) - cpu[1]
            rows.append(("two Go byte relays (no TLS)", relays))
            rows.append(("two Go relays (mTLS over TCP)", _row_go_tls(tmp, agent, args)))
            rows.append(("proxy + forwarder (mTLS)", _row_python(tmp, agent, args)))
            if args.plain:
                rows.append(("proxy + forwarder (no TLS)",
                             _row_python(tmp, agent, args, tls=False)))
            if args.floor:
                rows.append(("floor: 2 thread relays, mTLS", _row_floor(tmp, agent, args)))
                if args.plain:
                    rows.append(("floor: 2 thread relays, plain",
                                 _row_floor(tmp, agent, args, tls=False)))
        finally:
            for proc in reversed(procs):
                _stop(proc)
    _print(rows, args)
    for name, r in rows[1:]:
        print(f"CPU used by the hops of '{name}': first {r['proxy_cpu_s']:.2f}s, second "
              f"{r['forwarder_cpu_s']:.2f}s")
    if args.profile_dir:
        for name in ("proxy", "forwarder"):
            _print_profile(Path(args.profile_dir) / f"{name}.txt")


def _write_pems(pems: Path) -> None:
    """The middle hop's mutual TLS material: client and server pairs and the server's CA."""
    pki = make_pki()
    pems.mkdir()
    for name, pair in (("client", pki.client), ("server", pki.server)):
        (pems / f"{name}.crt").write_text(pair.cert_pem)
        (pems / f"{name}.key").write_text(pair.key_pem)
    (pems / "ca.crt").write_text(pki.ca.cert_pem)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _row_go_tls(tmp: str, agent: str, args: argparse.Namespace) -> dict[str, float]:
    """Two Go relays with the middle hop over TCP and mutual TLS (Go's default settings), laid
    out as the proxy and the forwarder are: about what upstream's Go hops cost."""
    pems = Path(tmp) / "go-pems"
    _write_pems(pems)
    port, sock = _free_port(), str(pems / "relay.sock")
    second = [str(PEER), "relay", "--address", f"tcp:127.0.0.1:{port}", "--upstream",
              f"unix:{agent}", "--listen-tls", str(pems)]
    first = [str(PEER), "relay", "--address", f"unix:{sock}", "--upstream",
             f"tcp:127.0.0.1:{port}", "--upstream-tls", str(pems), "--server-name", SERVER_NAME]
    return _two_hops(second, first, port, sock, "Go TLS relay", args)


def _two_hops(second_argv: list[str], first_argv: list[str], port: int, sock: str, what: str,
              args: argparse.Namespace) -> dict[str, float]:
    """Start the second hop (listening on ``port``), then the first (on ``sock``), measure
    through them, stop both."""
    second = subprocess.Popen(second_argv)
    first: subprocess.Popen[bytes] | None = None
    try:
        _wait_port(port, second, what)
        first = subprocess.Popen(first_argv)
        _wait_path(sock, first, what)
        return _measure(sock, first, second, args)
    finally:
        if first is not None:
            _stop(first)
        _stop(second)


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} does not listen on {port}") from None
            time.sleep(0.01)


def _measure(sock: str, first: subprocess.Popen[bytes], second: subprocess.Popen[bytes],
             args: argparse.Namespace) -> dict[str, float]:
    """The client's measurements through ``sock``, with the CPU each hop used meanwhile."""
    cpu = _cpu(first.pid), _cpu(second.pid)
    result = _client(f"unix:{sock}", args.calls, args.rounds)
    result["proxy_cpu_s"] = _cpu(first.pid) - cpu[0]
    result["forwarder_cpu_s"] = _cpu(second.pid) - cpu[1]
    return result


def _row_floor(tmp: str, agent: str, args: argparse.Namespace,
               tls: bool = True) -> dict[str, float]:
    """The thinnest Python relay (benchmarks/floor_relay.py) in the proxy and forwarder's
    places: what no Python relay gets below on this machine."""
    pems = Path(tmp) / ("floor-pems" if tls else "floor-no-pems")
    extra: list[str] = []
    if tls:
        _write_pems(pems)
        extra = ["--pems", str(pems)]
    else:
        pems.mkdir()
    port, sock = _free_port(), str(pems / "floor.sock")
    second = [sys.executable, str(FLOOR), "second", "--port", str(port), "--upstream", agent,
              *extra]
    first = [sys.executable, str(FLOOR), "first", "--listen", sock, "--upstream", str(port),
             "--server-name", SERVER_NAME, *extra]
    return _two_hops(second, first, port, sock, "floor relay", args)


def _print(rows: list[tuple[str, dict[str, float]]], args: argparse.Namespace) -> None:
    base = rows[0][1]
    print(f"{args.calls} sequential Checks, {args.rounds} rounds of 20 concurrent Checks with "
          f"one WaitProcess blocked, ReadStdout 16 MiB in 1 MiB calls (best of 5); python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'path':<30}{'p50 us':>8}{'p99 us':>8}{'x':>6}{'20c p50':>9}{'20c p99':>9}"
          f"{'20c wall':>10}{'x':>6}{'MB/s':>8}{'x':>6}")
    for name, r in rows:
        print(f"{name:<30}{r['check_p50_us']:>8.0f}{r['check_p99_us']:>8.0f}"
              f"{r['check_p50_us'] / base['check_p50_us']:>6.2f}"
              f"{r['concurrent_p50_us']:>9.0f}{r['concurrent_p99_us']:>9.0f}"
              f"{r['concurrent_wall_us']:>10.0f}"
              f"{r['concurrent_wall_us'] / base['concurrent_wall_us']:>6.2f}"
              f"{r['read_stdout_mb_s']:>8.0f}"
              f"{r['read_stdout_mb_s'] / base['read_stdout_mb_s']:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--profile-dir", default="")
    parser.add_argument("--plain", action="store_true",
                        help="also measure proxy + forwarder without TLS (-disable-tls)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure the thinnest Python relay (benchmarks/floor_relay.py)"
                             " in the hops' places: with --plain, with and without TLS")
    parser.add_argument("--serve-proxy", nargs=3, metavar=("SOCKET", "PORT", "PEM_DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        sock, port, pems = args.serve_proxy
        aio.run(_proxy_main(sock, int(port), pems))  # uvloop, as the adaptor runs
        return
    if not PEER.exists():
        raise SystemExit(f"{PEER} is missing: run .ci/setup.d/20-go-interop.sh")
    bench(args)


if __name__ == "__main__":
    main()
