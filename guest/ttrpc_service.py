"""What the AA and CDH ttrpc services share: registration tables and error translation."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from guest.errors import GuestError
from protocols.ttrpc import Method, Server, TTRPCError

#: (service, method, handler, request type, response type)
Route = tuple[str, str, Any, type[Any], type[Any]]


def register(server: Server, routes: Iterable[Route]) -> None:
    """Register each service once, with all of its methods."""
    services: dict[str, dict[str, Method[Any, Any]]] = {}
    for service, name, handler, request, response in routes:
        services.setdefault(service, {})[name] = Method(handler, request, response)
    for service, methods in services.items():
        server.register_service(service, methods)


@contextmanager
def failing_as(
    error: TTRPCError,
    log: logging.Logger,
    line: str,
    *args: object,
    catch: tuple[type[BaseException], ...] = (GuestError,),
) -> Iterator[None]:
    """Log ``line % args`` with the cause once, and answer ``error`` on the wire."""
    try:
        yield
    except catch as exc:
        log.error(line + ": %s", *args, exc)
        raise error from exc
