"""Settings of ``peerpods-webhook``: upstream's env vars and controller-runtime's flags."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from runtime.settings import SettingsError, setting
from webhook.mutate import DEFAULT_EXTENDED_RESOURCE, DEFAULT_RUNTIME_CLASS

PROGRAM_NAME = "peerpods-webhook"
CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"  # controller-runtime's default
LOG_LEVELS = ("debug", "info", "error")


@dataclass(frozen=True)
class WebhookSettings:
    TITLE = "peerpods-webhook"

    target_runtime_class: str = setting(
        env="TARGET_RUNTIMECLASS", default=DEFAULT_RUNTIME_CLASS,
        help="mutate only pods of this RuntimeClass")
    extended_resource: str = setting(
        env="POD_VM_EXTENDED_RESOURCE", default=DEFAULT_EXTENDED_RESOURCE,
        help="extended resource put on the first container (requests = limits = 1)")
    tls_min_version: str = setting(
        env="TLS_MIN_VERSION", help="minimum TLS version: VersionTLS12 or VersionTLS13")
    tls_cipher_suites: str = setting(
        env="TLS_CIPHER_SUITES", help="comma-separated IANA TLS 1.2 cipher suite names")
    webhook_bind_address: str = setting(
        flag="webhook-bind-address", default=":9443",
        help="the address the webhook (HTTPS) listens on")
    probe_bind_address: str = setting(
        flag="health-probe-bind-address", default=":8081",
        help="the address /healthz and /readyz (HTTP) listen on")
    cert_dir: str = setting(
        flag="cert-dir", default=CERT_DIR,
        help="directory holding the serving certificate and key")
    cert_name: str = setting(flag="cert-name", default="tls.crt",
                             help="serving certificate file in -cert-dir (PEM chain)")
    key_name: str = setting(flag="key-name", default="tls.key",
                            help="serving key file in -cert-dir (PEM)")
    cert_poll_interval: timedelta = setting(
        flag="cert-poll-interval", default=timedelta(seconds=10),
        help="how often the certificate files are checked for a new certificate")
    log_level: str = setting(flag="zap-log-level", default="info",
                             help="log level: debug, info or error")
    metrics_bind_address: str = setting(
        flag="metrics-bind-address", default=":8443",
        help="accepted for compatibility with upstream's arguments; no metrics are served")
    leader_elect: bool = setting(
        flag="leader-elect", default=False,
        help="accepted for compatibility; every replica serves (the webhook is stateless)")

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"-zap-log-level: {self.log_level!r} is not one of "
                                f"{', '.join(LOG_LEVELS)}")
        if self.cert_poll_interval <= timedelta(0):
            raise SettingsError("-cert-poll-interval: must be positive")
        parse_address(self.webhook_bind_address)
        parse_address(self.probe_bind_address)


def parse_address(text: str) -> tuple[str | None, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` -> (host or None for all, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"invalid bind address {text!r}: want host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host or None), int(port)
