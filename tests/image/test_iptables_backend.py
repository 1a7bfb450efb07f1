"""image/iptables-wrapper in the built cloud-api-adaptor image: the image's iptables takes
the backend (nft or legacy) of the rules already in the network namespace it runs in, as
the node's rules decide it for a DaemonSet pod on the host network. Each case seeds a fresh
namespace with the host's own iptables-legacy / iptables-nft, then calls the image's
iptables in it, from a fresh working container (the choice is made once per container)."""

from __future__ import annotations

import subprocess

import pytest

from tests.image.builtimage import Unavailable, mounted
from tests.netns import NetnsPool, netns_pool

__all__ = ["netns_pool"]

pytestmark = [pytest.mark.root, pytest.mark.netns]

HINT = ["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]
RULE = ["-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", "4789", "-j", "ACCEPT"]


@pytest.mark.parametrize("seed, backend", [
    ([], "nf_tables"),
    ([("legacy", RULE), ("legacy", RULE)], "legacy"),
    ([("nft", RULE), ("nft", RULE), ("legacy", RULE)], "nf_tables"),
    ([("nft", HINT), ("legacy", RULE), ("legacy", RULE)], "nf_tables"),
    ([("legacy", HINT), ("nft", RULE), ("nft", RULE)], "legacy"),
], ids=["empty", "legacy-rules", "more-nft-rules", "nft-hint", "legacy-hint"])
def test_iptables_follows_the_nodes_backend(
    netns_pool: NetnsPool, seed: list[tuple[str, list[str]]], backend: str
) -> None:
    node = netns_pool.create("node")
    for kind, rule in seed:
        node.run([f"iptables-{kind}", *rule])
    try:
        with mounted("cloud-api-adaptor") as image:
            def in_image(*argv: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(["ip", "netns", "exec", node.name,
                                       *image.command(list(argv))],
                                      capture_output=True, text=True, timeout=120)

            first = in_image("iptables", "-t", "raw", "-S")
            assert first.returncode == 0, first.stderr
            version = in_image("iptables", "-V")
            saved = in_image("ip6tables-save")
            chosen = (image.root / "etc" / "alternatives" / "iptables").readlink()
    except Unavailable as exc:
        pytest.skip(str(exc))
    assert version.stdout.strip().endswith(f"({backend})"), version.stdout
    assert chosen.name == f"iptables-{'nft' if backend == 'nf_tables' else 'legacy'}"
    assert saved.returncode == 0, saved.stderr
    if any(rule is RULE and kind == chosen.name.split("-")[1] for kind, rule in seed):
        assert "--dport 4789" in first.stdout  # the rules of the chosen backend are seen
