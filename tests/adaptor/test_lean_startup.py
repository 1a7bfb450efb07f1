"""Outside a cluster the adaptor does not load the Kubernetes client: it decides from the
environment alone (no kubeconfig, no in-cluster service account) and leaves lightkube and
its HTTP stack unimported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from k8s import presence

PROBE = """
import json, sys
from adaptor.__main__ import make_cluster
from adaptor.cli import parse_command
command = parse_command(["local"], {})
cluster = make_cluster(command, "node-1", {})
print(json.dumps({"cluster": cluster is not None,
                  "loaded": sorted(m for m in sys.modules
                                   if m.split(".")[0] in ("lightkube", "httpx2", "k8s"))}))
"""


def test_no_kubernetes_client_is_loaded_without_access() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2]).stdout
    result = json.loads(out.splitlines()[-1])
    assert result == {"cluster": False, "loaded": ["k8s", "k8s.presence"]}


def test_access_is_configured_by_a_kubeconfig_or_a_mounted_token(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert not presence.configured({}, "", str(tmp_path))
    assert presence.configured({}, "/etc/kubeconfig", str(tmp_path))
    assert not presence.configured(env, "", str(tmp_path))  # no token mounted
    (tmp_path / "token").write_text("t")
    assert presence.configured(env, "", str(tmp_path))
    assert not presence.configured({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "", str(tmp_path))
