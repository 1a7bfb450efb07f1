"""The forwarder's server TLS context, from flags and ``apf.json`` as upstream combines them.

* Server certificate and key: ``-cert-file``/``-cert-key`` when given, else
  ``tls-server-cert``/``tls-server-key`` from ``apf.json``.
* Client CA: ``-ca-cert-file``, else ``tls-client-ca`` from ``apf.json``. A CA makes the
  client certificate required and verified (mutual TLS).
* Minimum version and cipher suites: ``tls-min-version``/``tls-cipher-suites`` of ``apf.json``
  (the forwarder has no flags for them).
* ``-tls-skip-verify`` together with a CA is refused, as upstream refuses it.
"""

from __future__ import annotations

import logging
import ssl

from forwarder.apf.options import Options
from protocols.apf import ApfConfig
from runtime.errors import ForwarderError
from runtime.tlsprofile import TLSProfileError, parse_profile, read_pem, server_context

log = logging.getLogger(__name__)


class TLSSetupError(ForwarderError, ValueError):
    """TLS is on but the certificate material or the profile is missing or unusable."""


def _read(path: str, what: str) -> str:
    try:
        return read_pem(path, what)
    except TLSProfileError as exc:
        raise TLSSetupError(str(exc)) from None


def build_server_context(options: Options, config: ApfConfig) -> ssl.SSLContext | None:
    """The listener's TLS context, or None with ``-disable-tls``."""
    if options.disable_tls:
        log.warning("listen=%s: TLS is disabled (-disable-tls); use it only for testing",
                    options.listen_addr)
        return None

    if options.cert_file or options.cert_key:
        if not (options.cert_file and options.cert_key):
            raise TLSSetupError("-cert-file and -cert-key must be given together")
        cert_pem = _read(options.cert_file, "certificate file")
        key_pem = _read(options.cert_key, "key file")
        source = f"{options.cert_file}"
    else:
        cert_pem, key_pem = config.tls_server_cert, config.tls_server_key
        source = f"{options.config_path} (tls-server-cert)"
        if not cert_pem or not key_pem:
            raise TLSSetupError(
                "TLS is enabled but no server certificate and key are configured: set "
                f"tls-server-cert and tls-server-key in {options.config_path}, or give "
                "-cert-file and -cert-key, or use -disable-tls on both sides"
            )

    if options.ca_cert_file:
        client_ca: str | None = _read(options.ca_cert_file, "CA certificate file")
        ca_source = options.ca_cert_file
    else:
        client_ca = config.tls_client_ca or None
        ca_source = f"{options.config_path} (tls-client-ca)"

    if options.tls_skip_verify:
        if client_ca:
            raise TLSSetupError(
                "specifying a root certificates file with the insecure flag is not allowed"
            )
        log.warning("listen=%s: -tls-skip-verify is set; use it only for testing",
                    options.listen_addr)

    try:
        profile = parse_profile(config.tls_min_version, config.tls_cipher_suites)
        context = server_context(cert_pem, key_pem, client_ca, profile)
    except TLSProfileError as exc:
        raise TLSSetupError(f"TLS setup failed: {exc}") from None

    if client_ca:
        log.info("listen=%s: mutual TLS, server certificate from %s, client CA from %s",
                 options.listen_addr, source, ca_source)
    else:
        log.warning("listen=%s: TLS without client certificate verification (no client CA); "
                    "server certificate from %s", options.listen_addr, source)
    if profile.is_set:
        log.info("listen=%s: TLS profile min-version=%s cipher-suites=%s", options.listen_addr,
                 profile.min_version or "VersionTLS12", ",".join(profile.cipher_suites) or "-")
    return context
