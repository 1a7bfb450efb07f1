"""Whether Kubernetes access is configured, told without importing the client.

The adaptor asks this first, so that a daemon running outside a cluster never loads lightkube
and its HTTP stack (several MiB of resident memory for nothing). :func:`k8s.access.detect`
applies the same rule and builds the client configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster(env: Mapping[str, str], service_account_dir: str = SERVICE_ACCOUNT_DIR) -> bool:
    """Running in a pod: ``KUBERNETES_SERVICE_HOST``/``PORT`` set and a token mounted."""
    return bool(env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT")
                and os.path.isfile(os.path.join(service_account_dir, "token")))


def configured(env: Mapping[str, str], kubeconfig: str = "",
               service_account_dir: str = SERVICE_ACCOUNT_DIR) -> bool:
    """A kubeconfig is given, or the process runs in a cluster."""
    return bool(kubeconfig) or in_cluster(env, service_account_dir)


def in_cluster_namespace(service_account_dir: str = SERVICE_ACCOUNT_DIR) -> str | None:
    """The namespace the service account is mounted for (client-go's and controller-runtime's
    in-cluster namespace), or ``None`` outside a cluster."""
    try:
        with open(os.path.join(service_account_dir, "namespace"), encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None
