"""The adaptor's common settings: upstream env names, flags and defaults (UPSTREAM-CAA §7.2)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from providers import registry
from runtime.settings import setting

DEFAULT_SOCKET = "/run/peerpod/hypervisor.sock"
DEFAULT_PODS_DIR = "/run/peerpod/pods"
DEFAULT_FORWARDER_PORT = 15150
STATE_DIR_NAME = "adaptor-state"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class AdaptorSettings:
    """Settings every provider shares. A non-empty env var is the default; a flag overrides."""

    TITLE: ClassVar[str] = "common settings"

    socket: str = setting(
        env="REMOTE_HYPERVISOR_ENDPOINT", flag="socket", default=DEFAULT_SOCKET,
        help="unix socket the Kata shim dials (hypervisor.Hypervisor, podvminfo.PodVMInfo)",
    )
    pods_dir: str = setting(
        env="PODS_DIR", flag="pods-dir", default=DEFAULT_PODS_DIR,
        help="directory holding one sub-directory (agent socket, apf.json) per sandbox",
    )
    pause_image: str = setting(
        env="PAUSE_IMAGE", flag="pause-image", default="",
        help="accepted for compatibility, unused",
    )
    forwarder_port: int = setting(
        env="FORWARDER_PORT", flag="forwarder-port", default=DEFAULT_FORWARDER_PORT,
        help="TCP port of the agent-protocol-forwarder in each pod VM",
    )
    ca_cert_file: str = setting(
        env="CACERT_FILE", flag="ca-cert-file", default="",
        help="CA that signed the pod VMs' server certificates (manual TLS; server name "
        "podvm-server). Unset: an in-process CA issues one certificate per pod VM",
    )
    cert_file: str = setting(
        env="CERT_FILE", flag="cert-file", default="",
        help="client certificate (unset: a self-signed one is generated)",
    )
    cert_key: str = setting(
        env="CERT_KEY", flag="cert-key", default="", help="client certificate key",
    )
    tls_skip_verify: bool = setting(
        env="TLS_SKIP_VERIFY", flag="tls-skip-verify", default=False,
        help="do not verify the pod VM's certificate (not with a CA file)",
    )
    tls_min_version: str = setting(
        env="TLS_MIN_VERSION", flag="tls-min-version", default="",
        help="minimum TLS version: VersionTLS12 or VersionTLS13",
    )
    tls_cipher_suites: tuple[str, ...] = setting(
        env="TLS_CIPHER_SUITES", flag="tls-cipher-suites", default=(),
        help="comma-separated IANA cipher suite names (TLS 1.2 only)",
    )
    disable_tls: bool = setting(
        flag="disable-tls", default=False, help="talk to the forwarder without TLS",
    )
    proxy_timeout: timedelta = setting(
        env="PROXY_TIMEOUT", flag="proxy-timeout", default=timedelta(minutes=5),
        help="how long StartVM waits for the pod VM's forwarder to answer",
    )
    tunnel_type: str = setting(
        env="TUNNEL_TYPE", flag="tunnel-type", default="vxlan",
        help="pod network tunnel: vxlan, or none",
    )
    vxlan_port: int = setting(
        env="VXLAN_PORT", flag="vxlan-port", default=4789, help="VXLAN UDP port",
    )
    vxlan_min_id: int = setting(
        flag="vxlan-min-id", default=555000, help="first VXLAN id handed out",
    )
    host_interface: str = setting(
        flag="host-interface", default="",
        help="worker interface for the tunnel (default: the default-route interface)",
    )
    initdata: str = setting(
        env="INITDATA", flag="initdata", default="", secret=True,
        help="default initdata (gzip+base64 TOML) for pods without the cc_init_data annotation",
    )
    cloud_config_verify: bool = setting(
        env="CLOUD_CONFIG_VERIFY", flag="cloud-config-verify", default=False,
        help="check the provider configuration at startup and refuse to start if it is wrong",
    )
    peerpods_limit_per_node: int = setting(
        env="PEERPODS_LIMIT_PER_NODE", flag="peerpods-limit-per-node", default=10,
        help="peer pods per node (negative: no extended resource)",
    )
    enable_scratch_space: bool = setting(
        env="ENABLE_SCRATCH_SPACE", flag="enable-scratch-space", default=False,
        help="ask the pod VM to set up encrypted scratch space",
    )
    ext_network_via_podvm: bool = setting(
        env="EXTERNAL_NETWORK_VIA_PODVM", flag="ext-network-via-podvm", default=False,
        help="route pod egress through a second NIC of the pod VM (experimental; aws, "
        "libvirt, local)",
    )
    pod_subnet_cidrs: tuple[str, ...] = setting(
        env="POD_SUBNET_CIDRS", flag="pod-subnet-cidrs", default=(),
        help="comma-separated extra pod subnets (IPv4 or IPv6) routed through the pod gateway, "
        "on the tunnel (experimental)",
    )
    runtimeclass_name: str = setting(
        env="RUNTIMECLASS_NAME", default="kata-remote",
        help="runtime class of the peer pods; with Kubernetes access, /startup waits until "
        "those on this node are Ready",
    )
    kubeconfig: str = setting(
        env="KUBECONFIG", flag="kubeconfig", default="",
        help="kubeconfig file for Kubernetes access (default: the in-cluster service account "
        "when there is one; neither: no Kubernetes integration)",
    )
    pod_uid: str = setting(
        env="POD_UID", flag="pod-uid", default="",
        help="uid of the adaptor's own pod (fieldRef metadata.uid), written to the node as "
        "owner of the extended resource",
    )
    enable_cloud_provider_external_plugin: bool = setting(
        env="ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN", default=False,
        help="load a cloud provider from a Go plugin (.so): not offered; the adaptor refuses "
        "to start when it is true",
    )
    cloud_provider_external_plugin_path: str = setting(
        env="CLOUD_PROVIDER_EXTERNAL_PLUGIN_PATH", default="",
        help="path of the Go plugin (accepted; plugins are not offered)",
    )
    cloud_provider_external_plugin_hash: str = setting(
        env="CLOUD_PROVIDER_EXTERNAL_PLUGIN_HASH", default="",
        help="SHA-256 of the Go plugin (accepted; plugins are not offered)",
    )
    probe_port: int = setting(
        env="PROBE_PORT", flag="probe-port", default=8000,
        help="port on 127.0.0.1 serving /startup, /healthz and /metrics (SO_REUSEPORT; "
        "0 picks a free port)",
    )
    node_name: str = setting(
        env="NODE_NAME", flag="node-name", default="",
        help="Kubernetes node name; every instance is tagged with it and the orphan sweep "
        "only touches instances carrying it (default: the host name)",
    )
    state_dir: str = setting(
        env="STATE_DIR", flag="state-dir", default="",
        help="where generated TLS material (CA, client certificate) is kept across restarts "
        "(default: adaptor-state next to the pods dir, e.g. /run/peerpod/adaptor-state)",
    )
    orphan_sweep_interval: timedelta = setting(
        env="ORPHAN_SWEEP_INTERVAL", flag="orphan-sweep-interval",
        default=timedelta(minutes=10),
        help="how often instances tagged with this node but unknown to the adaptor are "
        "deleted (also once at startup; 0 disables the sweep)",
    )
    orphan_grace_period: timedelta = setting(
        env="ORPHAN_GRACE_PERIOD", flag="orphan-grace-period",
        default=timedelta(minutes=15),
        help="minimum age of an unknown instance before the sweep deletes it (longer than "
        "a StartVM can take)",
    )
    shutdown_grace_period: timedelta = setting(
        env="SHUTDOWN_GRACE_PERIOD", flag="shutdown-grace-period",
        default=timedelta(seconds=20),
        help="on SIGTERM, how long calls in flight may finish before they are cancelled "
        "(pod VMs keep running either way)",
    )
    log_format: str = setting(
        env="LOG_FORMAT", flag="log-format", default="text", help="log format: text or json",
    )
    log_level: str = setting(
        env="LOG_LEVEL", flag="log-level", default="info",
        help="log level: debug, info, warning or error",
    )


def unsupported(settings: AdaptorSettings) -> str | None:
    """Why the settings ask for a feature this adaptor does not offer, or ``None``.

    Upstream (cloud-providers/table.go, ``LoadCloudProvider``) opens a Go plugin when
    ``ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN`` is true; a Python adaptor cannot load one, and
    going on with a built-in provider instead would silently run something else.
    """
    if settings.enable_cloud_provider_external_plugin:
        path = settings.cloud_provider_external_plugin_path or "(no path)"
        return ("ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN is true, but external cloud-provider "
                f"plugins (Go .so files, here {path}) are not supported; unset it and use a "
                "built-in provider")
    return None


def refused_by_provider(settings: AdaptorSettings, provider: str) -> str | None:
    """Why ``provider`` cannot run with these settings, or ``None``.

    ``EXTERNAL_NETWORK_VIA_PODVM`` needs a second NIC on every pod VM. Upstream attaches one
    on AWS and Alibaba Cloud only (cloud-providers/aws/provider.go, ``CreateInstance`` with
    ``spec.MultiNic``); elsewhere its pod VMs come up without one and the forwarder only logs
    ``failed to set up external network``. Here a provider that cannot is refused at
    startup. A provider not in :mod:`providers.registry` (tests' fakes) is not checked.
    """
    entry = registry.PROVIDERS.get(provider)
    if settings.ext_network_via_podvm and entry is not None and not entry.second_nic:
        offered = ", ".join(sorted(e.name for e in registry.PROVIDERS.values() if e.second_nic))
        return (f"EXTERNAL_NETWORK_VIA_PODVM is true, but the {provider} provider cannot give "
                f"pod VMs the second network interface it needs (offered by: {offered}); "
                "unset it")
    return None


def state_dir(settings: AdaptorSettings) -> str:
    """``STATE_DIR``, or ``adaptor-state`` next to the pods dir."""
    if settings.state_dir:
        return settings.state_dir
    parent = os.path.dirname(os.path.normpath(settings.pods_dir)) or "."
    return os.path.join(parent, STATE_DIR_NAME)
