"""tc ingress redirects that bridge the pod interface and its VXLAN device at layer 2.

Each direction is an ingress qdisc on the source device plus a u32 match-all filter whose
action is ``mirred egress redirect`` to the other device (the packet is stolen). Our
filters use a fixed preference so removal deletes only them; the ingress qdisc is removed
once no filter is left on it.
"""

from __future__ import annotations

from podnetwork.commands import run, succeeds

FILTER_PREF = "49152"


def add_redirect(src: str, dst: str, *, netns: str) -> None:
    """Redirect everything arriving on ``src`` out of ``dst``; replaces our earlier filter."""
    if "ingress" not in run(["tc", "qdisc", "show", "dev", src, "ingress"], netns=netns):
        run(["tc", "qdisc", "add", "dev", src, "ingress"], netns=netns)
    elif _has_our_filter(src, netns):
        _delete_our_filter(src, netns)
    run(
        [
            "tc", "filter", "add", "dev", src, "parent", "ffff:", "pref", FILTER_PREF,
            "protocol", "all", "u32", "match", "u32", "0", "0",
            "action", "mirred", "egress", "redirect", "dev", dst,
        ],
        netns=netns,
    )  # fmt: skip


def _has_our_filter(src: str, netns: str) -> bool:
    listing = run(["tc", "filter", "show", "dev", src, "parent", "ffff:"], netns=netns)
    return f"pref {FILTER_PREF} " in listing


def _delete_our_filter(src: str, netns: str) -> None:
    run(["tc", "filter", "del", "dev", src, "parent", "ffff:", "pref", FILTER_PREF], netns=netns)


def remove_redirect(src: str, *, netns: str) -> None:
    """Remove our redirect from ``src``; a missing device or filter is fine."""
    if not succeeds(["ip", "link", "show", "dev", src], netns=netns):
        return
    if "ingress" not in run(["tc", "qdisc", "show", "dev", src, "ingress"], netns=netns):
        return
    if _has_our_filter(src, netns):
        _delete_our_filter(src, netns)
    if not run(["tc", "filter", "show", "dev", src, "parent", "ffff:"], netns=netns).strip():
        run(["tc", "qdisc", "del", "dev", src, "ingress"], netns=netns)
