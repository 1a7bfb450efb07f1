"""The thinnest relay CPython can run, as a floor for the data path benchmark.

    python benchmarks/floor_relay.py first --listen SOCKET --upstream PORT \
        [--pems DIR --server-name NAME]
    python benchmarks/floor_relay.py second --port PORT --upstream SOCKET [--pems DIR]

Two processes laid out like the agent proxy and the forwarder: ``first`` accepts on a unix
socket and dials 127.0.0.1:PORT, ``second`` listens on 127.0.0.1:PORT and dials the agent's
unix socket. With ``--pems`` the middle hop
is mutual TLS with the product's own contexts (:mod:`runtime.tlsprofile`), so the cipher and
protocol are the product's. Each connection gets two threads per hop that do nothing but
``recv_into`` a preallocated buffer and ``sendall`` what came in: blocking sockets, no event
loop, no framing, no parsing, no interception, no backpressure beyond the kernel's.

It is not a product: it shows how close to the Go relays any Python relay can get on this
machine. The benchmark runs it in the same run as the product's hops (``--floor``).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from runtime.tlsprofile import client_context, server_context

BUFFER = 1 << 20


def _pump(src: socket.socket, dst: socket.socket) -> None:
    view = memoryview(bytearray(BUFFER))
    try:
        while n := src.recv_into(view):
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _relay(a: socket.socket, b: socket.socket) -> None:
    for src, dst in ((a, b), (b, a)):
        threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _first(listen: str, port: int, context: ssl.SSLContext | None, server_name: str) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(listen)
    server.listen(128)
    while True:
        conn, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", port))
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            upstream = context.wrap_socket(upstream, server_hostname=server_name)
        _relay(conn, upstream)


def _second(port: int, agent: str, context: ssl.SSLContext | None) -> None:
    server = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(agent)
        except OSError:  # a probe that only checked the port, or a failed handshake
            conn.close()
            continue
        _relay(conn, upstream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", choices=("first", "second"))
    parser.add_argument("--listen", help="first: the unix socket to accept on")
    parser.add_argument("--port", type=int, default=0, help="second: the TCP port to listen on")
    parser.add_argument("--upstream", required=True,
                        help="first: the second's TCP port; second: the agent's unix socket")
    parser.add_argument("--pems", help="directory with ca.crt, client.crt/.key, server.crt/.key")
    parser.add_argument("--server-name", default="", help="first: the name the server cert has")
    args = parser.parse_args()
    pems = Path(args.pems) if args.pems else None
    if args.role == "first":
        context = None
        if pems is not None:
            context = client_context((pems / "client.crt").read_text(),
                                     (pems / "client.key").read_text(),
                                     (pems / "ca.crt").read_text())
        _first(args.listen, int(args.upstream), context, args.server_name)
    else:
        context = None
        if pems is not None:
            context = server_context((pems / "server.crt").read_text(),
                                     (pems / "server.key").read_text(),
                                     (pems / "client.crt").read_text())
        _second(args.port, args.upstream, context)


if __name__ == "__main__":
    main()
