"""CreateVM's pure part: annotations + pod network + TLS -> a new sandbox record.

Keeps the requested instance type (selected at StartVM, see :mod:`adaptor.instancetype`),
renders ``apf.json`` and the ``#cloud-config`` user-data, and
writes the private ``apf.json`` debugging copy. No VM is created here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping

from adaptor import annotations as ann
from adaptor.cloudconfig import build_apf, pod_initdata, render_user_data
from adaptor.naming import instance_name
from adaptor.network.base import WorkerNetwork
from adaptor.record import APF_COPY_NAME, SOCKET_NAME, SandboxRecord
from adaptor.store import write_private
from adaptor.tls import AgentTLS
from adaptor.volumes import DIRECT_VOLUMES_DIR, pod_volumes
from protocols import apf
from providers.base import InstanceSpec

log = logging.getLogger("adaptor.manager")

AuthSource = Callable[[str, str], Awaitable[str | None]]


class SandboxBuilder:
    def __init__(
        self,
        pods_dir: str,
        node_name: str,
        *,
        enable_scratch_space: bool,
        ext_network_via_podvm: bool,
        default_initdata: str,
        network: WorkerNetwork,
        tls: AgentTLS,
        auth_source: AuthSource | None,
        direct_volumes_dir: str = DIRECT_VOLUMES_DIR,
    ) -> None:
        self._direct_volumes_dir = direct_volumes_dir
        self._pods_dir = pods_dir
        self._node_name = node_name
        self._enable_scratch_space = enable_scratch_space
        self._ext_network_via_podvm = ext_network_via_podvm
        self._default_initdata = default_initdata
        self._network = network
        self._tls = tls
        self._auth_source = auth_source

    def _spec(self, sandbox_id: str, annotations: Mapping[str, str]) -> InstanceSpec:
        res = ann.resources(annotations)
        if res.image:
            log.info("sandbox=%s: Choosing %s from annotation as the pod VM image",
                     sandbox_id, res.image)
        return InstanceSpec(
            instance_type=res.instance_type or None,
            vcpus=res.vcpus,
            memory_mib=res.memory_mib,
            gpus=res.gpus,
            gpu_model=res.gpu_model,
            image=res.image or None,
            volumes=self._volumes(sandbox_id, annotations),
            multi_nic=self._ext_network_via_podvm,
        )

    def _volumes(self, sandbox_id: str, annotations: Mapping[str, str]) -> tuple[str, ...]:
        """Upstream's ``GetCSIVolumesForPod``: the disk ids of the pod's CSI block volumes."""
        disks = tuple(v.disk_id for v in pod_volumes(self._direct_volumes_dir, annotations))
        if disks:
            log.info("sandbox=%s: Found %d CSI volumes to attach to PodVM", sandbox_id,
                     len(disks))
        return disks

    async def build(
        self,
        sandbox_id: str,
        annotations: Mapping[str, str],
        netns_path: str,
        fingerprint: str,
    ) -> SandboxRecord:
        pod_name = ann.pod_name(annotations)
        pod_namespace = ann.pod_namespace(annotations)
        spec = self._spec(sandbox_id, annotations)
        initdata_b64 = pod_initdata(annotations, self._default_initdata)
        name = instance_name(pod_name, sandbox_id)
        auth_json = None
        if self._auth_source is not None:
            auth_json = await self._auth_source(pod_namespace, pod_name)
        network = await self._network.inspect(sandbox_id, netns_path)
        try:
            config = build_apf(
                pod_name=pod_name,
                pod_namespace=pod_namespace,
                network=network,
                material=self._tls.server_material(name),
                profile=self._tls.profile,
            )
            apf_json = apf.dumps(config)
            user_data = render_user_data(
                apf_json=apf_json,
                initdata_b64=initdata_b64,
                auth_json=auth_json,
                scratch_space=self._enable_scratch_space,
            )
            pod_dir = os.path.join(self._pods_dir, sandbox_id)
            write_private(os.path.join(pod_dir, APF_COPY_NAME), apf_json)
        except BaseException:
            self._network.release(sandbox_id)
            raise
        return SandboxRecord(
            sandbox_id=sandbox_id,
            pod_name=pod_name,
            pod_namespace=pod_namespace,
            netns_path=netns_path,
            instance_name=name,
            socket_path=os.path.join(pod_dir, SOCKET_NAME),
            spec=spec,
            pod_network=config.pod_network,
            user_data=user_data,
            fingerprint=fingerprint,
            server_name=self._tls.server_name(name) or "",
        )
