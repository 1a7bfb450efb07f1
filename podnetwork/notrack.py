"""iptables raw-table NOTRACK rules for a tunnel's VXLAN traffic (upstream's exact rules).

Chains ``peerpod-OUTPUT`` (jumped to from ``OUTPUT``) and ``peerpod-PREROUTING`` (from
``PREROUTING``) hold one rule each per tunnel, tagged ``peerpod [vni:<id>]`` and matching the
peer's address and the VXLAN port. Removal finds rules by that tag, so it works without
knowing the peer address and never touches another tunnel's rules. A chain is removed once
it is empty. The worker side and the pod VM side use the same rules (with each other's
address as the peer). Failures raise :class:`podnetwork.commands.CommandError`.
"""

from __future__ import annotations

import shlex
import shutil
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from podnetwork.commands import CommandError, attempt, run, succeeds
from podnetwork.plan import NotrackRules
from podnetwork.steps import Step

OUTPUT_CHAIN = "peerpod-OUTPUT"
PREROUTING_CHAIN = "peerpod-PREROUTING"
TABLE = "raw"

# iptables calls from this process are serialized; ``-w`` waits for other processes' lock.
_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Rule:
    base: str
    chain: str
    spec: tuple[str, ...]


def comment(vxlan_id: int) -> str:
    return f"peerpod [vni:{vxlan_id}]"


def _rules(peer: IPv4Address | IPv6Address, port: int, vxlan_id: int) -> tuple[_Rule, ...]:
    common = ("-p", "udp", "-m", "udp", "--dport", str(port), "-j", "NOTRACK")
    tag = ("-m", "comment", "--comment", comment(vxlan_id))
    return (
        _Rule("OUTPUT", OUTPUT_CHAIN, (*tag, "-d", str(peer), *common)),
        _Rule("PREROUTING", PREROUTING_CHAIN, (*tag, "-s", str(peer), *common)),
    )


def _binary(version: int) -> str:
    return "ip6tables" if version == 6 else "iptables"


def add_notrack(
    peer: IPv4Address | IPv6Address, port: int, vxlan_id: int, *, netns: str | None = None
) -> None:
    """Add both NOTRACK rules for ``peer`` (idempotent), creating the chains as needed."""
    ipt = [_binary(peer.version), "-w", "-t", TABLE]
    with _LOCK:
        for rule in _rules(peer, port, vxlan_id):
            if not succeeds([*ipt, "-S", rule.chain], netns=netns):
                run([*ipt, "-N", rule.chain], netns=netns)
            if not succeeds([*ipt, "-C", rule.base, "-j", rule.chain], netns=netns):
                run([*ipt, "-A", rule.base, "-j", rule.chain], netns=netns)
            if not succeeds([*ipt, "-C", rule.chain, *rule.spec], netns=netns):
                run([*ipt, "-A", rule.chain, *rule.spec], netns=netns)


def remove_notrack(vxlan_id: int, *, netns: str | None = None) -> None:
    """Remove every rule tagged with ``vxlan_id`` from both chains; drop chains left empty.

    Rules and chains already gone count as removed; any other iptables failure raises
    :class:`~podnetwork.commands.CommandError` (calling again later finishes the job).
    """
    tag = comment(vxlan_id)
    with _LOCK:
        for binary in ("iptables", "ip6tables"):
            if shutil.which(binary) is None:
                continue
            ipt = [binary, "-w", "-t", TABLE]
            listing = _table_rules(ipt, netns)
            if listing is None:
                continue  # no raw table for this family: nothing of ours there
            for base, chain in (("OUTPUT", OUTPUT_CHAIN), ("PREROUTING", PREROUTING_CHAIN)):
                if ["-N", chain] not in listing:
                    continue
                remaining = 0
                for words in listing:
                    if len(words) < 2 or words[0] != "-A" or words[1] != chain:
                        continue
                    if _has_comment(words, tag):
                        run([*ipt, "-D", *words[1:]], netns=netns)
                    else:
                        remaining += 1
                if remaining == 0:
                    while succeeds([*ipt, "-C", base, "-j", chain], netns=netns):
                        run([*ipt, "-D", base, "-j", chain], netns=netns)
                    run([*ipt, "-X", chain], netns=netns)


def notrack_step(rules: NotrackRules) -> Step:
    """The setup step that adds a tunnel's NOTRACK rules; its undo removes them (the same
    step on the worker and in the pod VM)."""
    return Step(
        "add NOTRACK rules",
        lambda: add_notrack(rules.peer, rules.port, rules.vxlan_id, netns=rules.netns),
        lambda: remove_notrack(rules.vxlan_id, netns=rules.netns),
    )


def _table_rules(ipt: list[str], netns: str | None) -> list[list[str]] | None:
    """The table's ``-S`` listing split into words; ``None`` when the table does not exist."""
    proc = attempt([*ipt, "-S"], netns=netns)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            return None
        where = f" (netns {netns})" if netns else ""
        raise CommandError(
            f"{' '.join([*ipt, '-S'])}{where} failed with exit {proc.returncode}:"
            f" {proc.stderr.strip()}"
        )
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def _has_comment(words: list[str], tag: str) -> bool:
    return any(words[i] == "--comment" and words[i + 1] == tag for i in range(len(words) - 1))
