"""systemd unit files as data, and the boot chain's order derived from them."""

from __future__ import annotations

from collections.abc import Mapping

#: The pod VM's boot chain, in the order the units must start (UPSTREAM-CAA.md §4.4).
CHAIN = (
    "process-user-data.service",
    "attestation-agent.service",
    "confidential-data-hub.service",
    "kata-agent.service",
    "agent-protocol-forwarder.service",
)
UNITS = (*CHAIN, "netns@.service", "api-server-rest.service", "setup-nat-for-imds.service")

Unit = dict[str, dict[str, list[str]]]


def parse(text: str) -> Unit:
    """Sections -> keys -> every value (systemd allows a key more than once)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"key outside a section: {line!r}"
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def words(unit: Unit, section: str, key: str) -> set[str]:
    return {w for value in unit.get(section, {}).get(key, []) for w in value.split()}


def after(units: Mapping[str, Unit], name: str) -> set[str]:
    """Every unit ``name`` is ordered after, directly or through others (After= and the
    Before= of the others)."""
    direct: dict[str, set[str]] = {n: words(u, "Unit", "After") for n, u in units.items()}
    for n, u in units.items():
        for later in words(u, "Unit", "Before"):
            direct.setdefault(later, set()).add(n)
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in direct.get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def chain_order(units: Mapping[str, Unit]) -> list[str]:
    """The chain's units sorted by the ordering the unit files declare; fails when two
    units of the chain are not ordered against each other."""
    chain = list(CHAIN)
    for i, earlier in enumerate(chain):
        for later in chain[i + 1:]:
            if earlier not in after(units, later) and later not in after(units, earlier):
                raise AssertionError(f"{earlier} and {later} are not ordered")
    return sorted(chain, key=lambda n: len([c for c in chain if c in after(units, n)]))
