"""What the adaptor keeps in its pods dir, read for ``peerpodctl list``/``show``: each
sandbox directory's files, JSON ones parsed with secrets redacted. Tolerant of anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptor.sandbox import SOCKET_NAME

REDACTED = "***"


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


def summaries(pods_dir: Path) -> list[dict[str, Any]]:
    """One summary per sandbox directory (none when ``pods_dir`` does not exist)."""
    try:
        entries = sorted(p for p in pods_dir.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    return [pod_dir_summary(entry) for entry in entries]
