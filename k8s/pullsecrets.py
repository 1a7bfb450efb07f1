"""``auth.json`` for the pod VM from the pod's image-pull secrets
(upstream: ``pkg/adaptor/k8sops/node.go GetImagePullSecrets``, ``addAuths``;
``pkg/adaptor/cloud/cloud.go`` for the cap).

Order and precedence as upstream: the secrets of the pod's ServiceAccount (``default`` when
the pod names none) first, then the pod's own ``imagePullSecrets``; a registry named again
later replaces the earlier entry, so the pod's secrets win over the ServiceAccount's.
``.dockerconfigjson`` is read, else ``.dockercfg``. Each entry keeps only ``auth``,
computed as base64(``user:password``) when missing; entries with neither are skipped. A
secret that cannot be read is skipped (as the kubelet does); any other failure means no
``auth.json`` (logged, CreateVM goes on). Over upstream's 12288-byte cap the file is not
sent either, as upstream decides, but with a warning naming the pod and the size.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod, Secret, ServiceAccount

from k8s.access import KubeError, translate
from protocols.userdata import AUTH_JSON_MAX_BYTES

log = logging.getLogger(__name__)

DOCKER_CONFIG_JSON = ".dockerconfigjson"
DOCKER_CFG = ".dockercfg"


class PullSecretError(KubeError):
    """A pull secret holds something that is not a docker config."""


def registries(data: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """The registry entries of one secret's data (decoded bytes per key)."""
    try:
        if DOCKER_CONFIG_JSON in data:
            parsed = json.loads(data[DOCKER_CONFIG_JSON]).get("auths") or {}
        elif DOCKER_CFG in data:
            parsed = json.loads(data[DOCKER_CFG])
        else:
            return {}
    except (ValueError, AttributeError) as exc:
        raise PullSecretError(f"not a docker config: {exc}") from None
    if not isinstance(parsed, dict):
        raise PullSecretError("not a docker config: registries are not an object")
    return {str(k): v for k, v in parsed.items() if isinstance(v, dict)}


def merge(secrets: Iterable[Mapping[str, bytes]]) -> dict[str, dict[str, str]]:
    """Registry -> ``{"auth": ...}``, later secrets winning."""
    merged: dict[str, dict[str, str]] = {}
    for data in secrets:
        for registry, creds in registries(data).items():
            auth = creds.get("auth") or ""
            if not auth:
                user, password = creds.get("username") or "", creds.get("password") or ""
                if not (user and password):
                    continue
                auth = base64.b64encode(f"{user}:{password}".encode()).decode()
            merged[registry] = {"auth": str(auth)}
    return merged


def render(merged: Mapping[str, Mapping[str, str]]) -> str | None:
    """``{"auths": ...}`` as Go's ``json.Marshal`` writes it (sorted keys, compact)."""
    if not merged:
        return None
    return json.dumps({"auths": merged}, sort_keys=True, separators=(",", ":"))


def _decoded(secret: Secret) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in (secret.data or {}).items():
        try:
            out[key] = base64.b64decode(value)
        except (binascii.Error, ValueError):
            continue
    return out


async def pull_secret_data(client: AsyncClient, namespace: str,
                           pod_name: str) -> list[dict[str, bytes]]:
    """The data of each readable pull secret, in upstream's order."""
    with translate(f"get pod {namespace}/{pod_name}"):
        pod = await client.get(Pod, pod_name, namespace=namespace)
    spec = pod.spec
    account = (spec.serviceAccountName if spec is not None else None) or "default"
    with translate(f"get serviceaccount {namespace}/{account}"):
        sa = await client.get(ServiceAccount, account, namespace=namespace)
    names = [ref.name for ref in (sa.imagePullSecrets or []) if ref.name]
    names += [ref.name for ref in ((spec.imagePullSecrets if spec else None) or []) if ref.name]
    found = []
    for name in names:
        try:
            with translate(f"get secret {namespace}/{name}"):
                secret = await client.get(Secret, name, namespace=namespace)
        except KubeError as exc:
            log.debug("pod %s/%s: image-pull secret %s skipped: %s", namespace, pod_name,
                      name, exc)
            continue
        found.append(_decoded(secret))
    return found


async def auth_json(client: AsyncClient, namespace: str, pod_name: str) -> str | None:
    """The pod's ``auth.json``, or ``None`` (no secrets, an error, or over the cap)."""
    try:
        merged = merge(await pull_secret_data(client, namespace, pod_name))
    except KubeError as exc:
        log.warning("pod %s/%s: error reading image pull secrets: %s", namespace, pod_name,
                    exc)
        return None
    text = render(merged)
    if text is None:
        return None
    size = len(text.encode())
    if size > AUTH_JSON_MAX_BYTES:
        log.warning("pod %s/%s: auth.json from the image-pull secrets is %d bytes, over the "
                    "%d-byte limit of user-data; it is not sent, so the pod VM has no "
                    "registry credentials", namespace, pod_name, size, AUTH_JSON_MAX_BYTES)
        return None
    log.info("pod %s/%s: image-pull secrets found (%d registries)", namespace, pod_name,
             len(merged))
    return text
