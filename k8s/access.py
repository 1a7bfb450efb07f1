"""Where the API server is, one async client for it, and the retry rules every caller uses.

Kubernetes access is on when a kubeconfig is given (``KUBECONFIG``) or when the process runs
in a cluster (``KUBERNETES_SERVICE_HOST``/``PORT`` set and a service-account token at
``/var/run/secrets/kubernetes.io/serviceaccount/token``); otherwise it is off and the
adaptor runs as before. The token file is re-read when the API server answers 401, so that
rotated service-account tokens keep working.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig
from lightkube.config.kubeconfig import Cluster, User

from k8s.presence import SERVICE_ACCOUNT_DIR, in_cluster, in_cluster_namespace
from runtime.errors import PeerPodsError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
T = TypeVar("T")


class KubeError(PeerPodsError):
    """An API call failed; ``code`` is the HTTP status (0: the server was not reached)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409

    @property
    def transient(self) -> bool:
        """Worth retrying: unreachable, conflict, throttled or a server-side failure."""
        return self.code in (0, 409, 429) or self.code >= 500


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn the client library's errors into :class:`KubeError` naming ``what``."""
    try:
        yield
    except ApiError as exc:
        code = int(exc.status.code or exc.response.status_code)
        raise KubeError(f"{what}: {code} {exc.status.reason or ''}: {exc.status.message}",
                        code) from None
    except httpx2.HTTPStatusError as exc:  # an error body that is not a Status
        code = exc.response.status_code
        raise KubeError(f"{what}: {code} {exc.response.reason_phrase}", code) from None
    except (httpx2.HTTPError, OSError) as exc:
        raise KubeError(f"{what}: API server unreachable: {exc or type(exc).__name__}") \
            from None
    except ConfigError as exc:
        raise KubeError(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Target:
    """The API server to talk to and where that was learnt (for the log)."""

    source: str
    config: KubeConfig


def detect(
    env: Mapping[str, str], kubeconfig: str = "",
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> Target | None:
    """A kubeconfig given wins; else the in-cluster service account; else ``None`` (off)."""
    if kubeconfig:
        try:
            return Target(f"kubeconfig {kubeconfig}", KubeConfig.from_file(kubeconfig))
        except (ConfigError, OSError, ValueError) as exc:
            raise KubeError(f"KUBECONFIG {kubeconfig}: {exc}") from None
    if not in_cluster(env, service_account_dir):
        return None
    host, port = env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]
    token = os.path.join(service_account_dir, "token")
    if ":" in host:
        host = f"[{host}]"
    namespace = in_cluster_namespace(service_account_dir)
    config = KubeConfig.from_one(
        cluster=Cluster(server=f"https://{host}:{port}",
                        certificate_auth=os.path.join(service_account_dir, "ca.crt")),
        user=User(token_file=token), namespace=namespace,
    )
    return Target("in-cluster service account", config)


def make_client(target: Target, *, field_manager: str,
                timeout: float = REQUEST_TIMEOUT) -> AsyncClient:
    return AsyncClient(config=target.config, field_manager=field_manager,
                       timeout=httpx2.Timeout(timeout))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between ``initial`` and ``maximum`` seconds."""

    initial: float = 1.0
    maximum: float = 60.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay * random.uniform(0.8, 1.2)
            delay = min(delay * 2, self.maximum)


DEFAULT_BACKOFF = Backoff()


async def retry(
    what: str, call: Callable[[], Awaitable[T]], *, backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    """Call until it succeeds, retrying :attr:`KubeError.transient` failures with backoff
    (until cancelled); other failures are raised. Each failure is logged once, at WARNING
    for the first and DEBUG after."""
    delays = backoff.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except KubeError as exc:
            if not exc.transient:
                raise
            delay = next(delays)
            level = logging.WARNING if attempt == 1 else logging.DEBUG
            log.log(level, "%s failed (attempt %d), retrying in %.1fs: %s", what, attempt,
                    delay, exc)
            await asyncio.sleep(delay)
