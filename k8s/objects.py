"""Names, resources and pure builders of the objects the adaptor and peerpod-ctrl use
(upstream: ``pkg/adaptor/k8sops/{node,peerpod}.go``, ``src/peerpod-ctrl/api/v1alpha1``), and
the Lease of peerpod-ctrl's leader election (:mod:`k8s.leader`)."""

from __future__ import annotations

import secrets
import string
from typing import Any

from lightkube.generic_resource import create_namespaced_resource

EXTENDED_RESOURCE = "kata.peerpods.io/vm"
OWNER_ANNOTATION = "kata.peerpods.io/caa-owner"
FINALIZER = "peer.pod/finalizer"
GROUP = "confidentialcontainers.org"
VERSION = "v1alpha1"

PeerPod = create_namespaced_resource(GROUP, VERSION, "PeerPod", "peerpods")
# Generic (its spec stays a dict), so that times keep the six fractional digits MicroTime needs.
Lease = create_namespaced_resource("coordination.k8s.io", "v1", "Lease", "leases")

_NAME_CHARS = string.ascii_lowercase + string.digits  # k8s.io/apimachinery rand.String
_SUFFIX_LEN = 5


def json_pointer_key(key: str) -> str:
    """RFC 6901 escaping of one path segment (upstream: ``newJSONPatch``)."""
    return key.replace("~", "~0").replace("/", "~1")


def capacity_patch(limit: int | None) -> list[dict[str, str]]:
    """JSON patch of ``nodes/status``: add the capacity, or remove it (``None``)."""
    path = "/status/capacity/" + json_pointer_key(EXTENDED_RESOURCE)
    if limit is None:
        return [{"op": "remove", "path": path}]
    return [{"op": "add", "path": path, "value": str(limit)}]


def owner_patch(owner_uid: str) -> dict[str, Any]:
    """Merge patch of the node's owner annotation."""
    return {"metadata": {"annotations": {OWNER_ANNOTATION: owner_uid}}}


def peerpod_name(pod_name: str) -> str:
    """``<pod>-resource-<5 random chars>`` as upstream's ``newPeerPod``."""
    suffix = "".join(secrets.choice(_NAME_CHARS) for _ in range(_SUFFIX_LEN))
    return f"{pod_name}-resource-{suffix}"


def peerpod_manifest(*, name: str, namespace: str, pod_name: str, pod_uid: str,
                     cloud_provider: str, instance_id: str) -> dict[str, Any]:
    """The PeerPod owned by the Pod (controller, blockOwnerDeletion), with the finalizer."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PeerPod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "finalizers": [FINALIZER],
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {"cloudProvider": cloud_provider, "instanceID": instance_id},
    }


RELEASE_PATCH = [{"op": "remove", "path": "/metadata/finalizers"}]
