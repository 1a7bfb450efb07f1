"""The pod VM image end to end: the adaptor on the libvirt provider boots it under a real
libvirtd with QEMU (emulation, UEFI), in a network namespace this module creates.

The image is podvm-image/build's hardened variant with the development agent in place of
kata-agent (.ci/setup.d/40-podvm-image.sh). The adaptor makes the domain with a real
``cidata`` config drive; in the VM process-user-data writes apf.json and the initdata files,
the forwarder comes up with mutual TLS on 15150, and StartVM returns. A ``Check`` through the
adaptor's agent proxy then reaches the development agent inside the VM, and StopVM deletes the
domain and its volumes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from protocols import initdata
from protocols.kata import health_pb2
from providers.local.devagent import NAME as DEVAGENT_NAME
from tests.adaptor.shim import shim_annotations
from tests.podvm_image.image import manifest_path

libvirt = pytest.importorskip("libvirt")

from tests.podvm_image.podvm import (  # noqa: E402
    BOOT_TIMEOUT,
    NO_NETNS,
    agent_check,
    domain_names,
    pool_volumes,
    running_adaptor,
)
from tests.providers.libvirt import libvirtd as daemon  # noqa: E402
from tests.providers.libvirt.adaptorproc import AdaptorInNetns  # noqa: E402

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.netns]

INITDATA_TOML = (
    'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
    f'"policy.rego" = "package agent_policy\\n# podvm image test {uuid.uuid4().hex}\\n"\n'
)


@pytest.fixture
async def adaptor(podvm_libvirtd: daemon.Libvirtd) -> AsyncIterator[AdaptorInNetns]:
    async with running_adaptor(podvm_libvirtd, {
        "INITDATA": initdata.encode(INITDATA_TOML),
    }) as proc:
        yield proc


#: Run in the daemon's namespace: a TLS client without a certificate dials the forwarder
#: and tries a ttrpc request; prints what the server did.
NO_CERT_CLIENT = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((sys.argv[1], 15150), timeout=60) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(bytes(10))
            data = tls.recv(1)
    print("served" if data else "closed")
except (ssl.SSLError, ConnectionError) as exc:
    print(f"refused: {exc}")
"""


def forwarder_without_client_cert(netns: str, address: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", NO_CERT_CLIENT,
                           address], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def domain_address(name: str, network: str) -> str:
    conn = libvirt.open(daemon.URI)
    try:
        dom = conn.lookupByName(name)
        mac = ET.fromstring(dom.XMLDesc(0)).find("devices/interface/mac")
        assert mac is not None
        leases = conn.networkLookupByName(network).DHCPLeases()
        return str(next(lease["ipaddr"] for lease in leases if lease["mac"] == mac.get("address")))
    finally:
        conn.close()


@pytest.mark.timeout(BOOT_TIMEOUT + 300)
async def test_the_adaptor_boots_the_image_and_reaches_the_agent_inside(
    adaptor: AdaptorInNetns, podvm_libvirtd: daemon.Libvirtd
) -> None:
    assert "development agent" in manifest_path().read_text()
    sid = uuid.uuid4().hex
    pod, namespace = f"img-{sid[-6:]}", "podvm-image"
    name = f"podvm-{pod}-{sid[:8]}"
    volumes_before = pool_volumes(podvm_libvirtd)

    agent_socket = await adaptor.shim.create_vm(sid, shim_annotations(pod, namespace), NO_NETNS)
    started = time.monotonic()
    await adaptor.shim.start_vm(sid, timeout=BOOT_TIMEOUT)
    boot_seconds = time.monotonic() - started
    print(f"StartVM (create, boot, forwarder ready over mTLS): {boot_seconds:.0f}s")
    assert name in domain_names()
    assert {f"{name}-root.qcow2", f"{name}-cloudinit.iso"} <= pool_volumes(podvm_libvirtd)

    # the agent proxy -> mTLS -> the forwarder in the VM -> the development agent
    status, agent_version = await agent_check(agent_socket)
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert agent_version == DEVAGENT_NAME
    # and port 15150 serves nobody without a client certificate the adaptor's CA signed
    address = domain_address(name, podvm_libvirtd.network)
    answer = await asyncio.to_thread(forwarder_without_client_cert, podvm_libvirtd.netns, address)
    assert answer.startswith("refused") or answer == "closed", answer

    await adaptor.shim.stop_vm(sid)
    assert name not in domain_names()
    assert pool_volumes(podvm_libvirtd) == volumes_before
    assert not os.path.exists(f"/var/lib/libvirt/qemu/nvram/{name}_VARS.fd")  # noqa: ASYNC240
    assert await adaptor.terminate() == 0
