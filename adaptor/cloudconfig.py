"""Pure builders for what a pod VM receives: ``apf.json`` and the ``#cloud-config`` user-data."""

from __future__ import annotations

from collections.abc import Mapping

from adaptor import annotations as ann
from adaptor.errors import InvalidRequest
from adaptor.tls import ServerMaterial
from protocols import apf, initdata, userdata
from runtime.tlsprofile import TLSProfile


def build_apf(
    *,
    pod_name: str,
    pod_namespace: str,
    network: apf.PodNetwork | None,
    material: ServerMaterial,
    profile: TLSProfile,
) -> apf.ApfConfig:
    return apf.ApfConfig(
        pod_network=network,
        pod_namespace=pod_namespace,
        pod_name=pod_name,
        tls_server_key=material.server_key,
        tls_server_cert=material.server_cert,
        tls_client_ca=material.client_ca,
        tls_min_version=profile.min_version,
        tls_cipher_suites=profile.cipher_suites,
    )


def validate_default_initdata(encoded: str) -> str:
    """Check the global ``INITDATA`` (gzip+base64 TOML) at startup; return it stripped."""
    text = encoded.strip()
    if not text:
        return ""
    try:
        initdata.parse(initdata.decode(text))
    except (initdata.InitDataError, ValueError) as exc:
        raise InvalidRequest(f"invalid INITDATA: {exc}") from None
    return text


def pod_initdata(annotations: Mapping[str, str], default: str) -> str:
    """The pod's initdata for user-data: the shim's plain TOML annotation, validated and
    re-encoded as gzip+base64, else the validated global default (may be empty)."""
    raw = annotations.get(ann.INITDATA, "")
    if not raw.strip():
        return default
    toml_bytes = raw.encode()
    try:
        initdata.parse(toml_bytes)
    except (initdata.InitDataError, ValueError) as exc:
        raise InvalidRequest(f"annotation {ann.INITDATA}: invalid initdata: {exc}") from None
    return initdata.encode(toml_bytes)


def render_user_data(
    *,
    apf_json: str,
    initdata_b64: str,
    auth_json: str | None = None,
    scratch_space: bool = False,
) -> str:
    """The ``#cloud-config`` text, files in upstream's order."""
    files = [userdata.WriteFile(userdata.APF_JSON_PATH, apf_json)]
    if auth_json and len(auth_json.encode()) <= userdata.AUTH_JSON_MAX_BYTES:
        files.append(userdata.WriteFile(userdata.AUTH_JSON_PATH, auth_json))
    if initdata_b64:
        files.append(userdata.WriteFile(userdata.INITDATA_PATH, initdata_b64))
    if scratch_space:
        files.append(userdata.WriteFile(userdata.SCRATCH_SPACE_MARKER_PATH, ""))
    try:
        return userdata.render(files)
    except userdata.UserDataError as exc:
        raise InvalidRequest(f"cannot render user-data: {exc}") from None
