"""The root of every error peerpods raises on purpose, and the errors every daemon shares.

Each package keeps its own errors beside its code and derives them from one branch here, so
that ``except PeerPodsError`` catches everything the project raises on purpose and nothing
else (``TypeError``, a stray ``KeyError``: those are bugs and keep their own type). Classes
that used to derive from ``ValueError`` or ``OSError`` still do, as a second base, so that
existing handlers keep working.

::

    PeerPodsError
    ├── UsageError              bad command line or settings; exit status 2   (runtime)
    │   └── SettingsError       a setting cannot be parsed or is missing      (runtime.values)
    ├── StartupError            a daemon cannot start (socket, certificate)   (runtime)
    ├── TLSProfileError         unreadable or invalid TLS material            (runtime.tlsprofile)
    ├── NotifyError             sd_notify could not be sent                   (runtime.sdnotify)
    ├── FormatError             a wire format cannot be parsed or rendered
    │   ├── ApfError            apf.json                                     (protocols.apf)
    │   ├── UserDataError       #cloud-config user-data                      (protocols.userdata)
    │   └── InitDataError       initdata TOML                                (protocols.initdata)
    ├── PodNetworkError         the pod network or its tunnel                 (podnetwork)
    │   ├── CommandError        ip/tc/iptables failed                         (podnetwork.commands)
    │   └── NetnsError          a network namespace is missing                (podnetwork.netns)
    ├── ProviderError           a cloud driver failed                         (providers.base)
    │   ├── InstanceNotFound, QuotaExceeded, Throttled, InvalidSpec,
    │   │   ProviderUnavailable
    │   └── ConfigError         the provider's settings name nothing usable
    ├── AdaptorError            what the adaptor answers the Kata shim        (adaptor.errors)
    │   ├── InvalidRequest ── InstanceTypeError
    │   ├── IllegalTransition   a step the sandbox state table does not allow (adaptor.errors)
    │   ├── SandboxExists, SandboxNotFound, StopFailed
    │   └── StartFailed ── ForwarderUnreachable
    ├── ForwarderError          the pod VM side                               (forwarder)
    │   ├── ProvisionError, FetchError, UnsafePathError      (process-user-data)
    │   └── TLSSetupError, MountWaitTimeout                  (agent-protocol-forwarder)
    └── GuestError              attestation-agent, confidential-data-hub      (guest.errors)
        ├── GuestConfigError, AttesterError, ResourceUriError
        └── KbsError ── HandshakeError, ResourceNotFound, Unauthorized, ResponseError

The ttrpc library (``protocols.ttrpc``) stays standalone: ``TTRPCError`` and its status codes
are its own root, and the adaptor's table in ``adaptor.service`` maps this tree onto them.
"""

from __future__ import annotations


class PeerPodsError(Exception):
    """Base of every error the project raises on purpose."""


class UsageError(PeerPodsError, ValueError):
    """The command line or the settings are wrong; the daemon exits with status 2."""


class StartupError(PeerPodsError):
    """A daemon cannot start: a socket cannot be bound, a certificate cannot be made."""


class FormatError(PeerPodsError, ValueError):
    """A wire format (apf.json, user-data, initdata) cannot be parsed or rendered."""


class ForwarderError(PeerPodsError):
    """Base of the pod VM side's errors (agent-protocol-forwarder, process-user-data)."""
