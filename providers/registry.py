"""Lazy name -> provider table. A provider's SDK loads only when that provider is chosen.

Each provider package ``providers/<name>/`` exposes, without importing its cloud SDK:
- ``Settings``: a frozen dataclass of ``runtime.settings.setting`` fields;
- ``make_provider(settings, *, node_name: str) -> Provider``, which imports the SDK.

Only providers that exist are listed. ``providers.fake`` (the in-memory provider of the
tests) is deliberately not: this table is the daemon's user-visible provider list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from runtime.errors import UsageError


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    name: str
    module: str
    extra: str | None  # the pip extra that brings the SDK, None when nothing is needed
    # Gives each pod VM a second NIC when asked (``InstanceSpec.multi_nic``), for
    # ``EXTERNAL_NETWORK_VIA_PODVM``; the adaptor refuses to start with it otherwise.
    second_nic: bool = False


PROVIDERS: dict[str, ProviderEntry] = {
    entry.name: entry
    for entry in (
        ProviderEntry("local", "providers.local", None, second_nic=True),
        ProviderEntry("aws", "providers.aws", "aws", second_nic=True),
        ProviderEntry("azure", "providers.azure", "azure"),
        ProviderEntry("libvirt", "providers.libvirt", "libvirt", second_nic=True),
        ProviderEntry("gcp", "providers.gcp", "gcp"),
    )
}


def names() -> list[str]:
    return sorted(PROVIDERS)


def load(name: str) -> ModuleType:
    """Import the provider package ``name`` (not its SDK)."""
    entry = PROVIDERS.get(name)
    if entry is None:
        raise UsageError(f"unknown cloud provider {name!r}; known: {', '.join(names())}")
    try:
        return importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name and entry.module.startswith(exc.name):
            raise UsageError(f"cloud provider {name!r} is not available in this build") from exc
        hint = f" (pip install 'peerpods[{entry.extra}]')" if entry.extra else ""
        raise UsageError(f"cloud provider {name!r} needs {exc.name}{hint}") from exc
