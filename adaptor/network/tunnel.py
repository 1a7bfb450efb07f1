"""Applying a :class:`~adaptor.network.plan.TunnelPlan` as steps with undo, and removing a
tunnel again. Blocking (netlink, ip/tc/iptables): callers run these in a worker thread.

Every removal deletes only what is this tunnel's (a VXLAN device with its id, our tc
filter, rules tagged with its id) and counts a missing one as removed, so repeating a
teardown after a failure finishes the job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from adaptor.network.plan import POD_VXLAN_INTERFACE, TunnelPlan, TunnelSite
from podnetwork import links, notrack, tc
from podnetwork.errors import PodNetworkError
from podnetwork.plan import Redirect, VxlanDevice
from podnetwork.steps import Action, Step

T = TypeVar("T")


def translate(what: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; netlink and OS errors become a :class:`PodNetworkError` led by ``what``."""
    try:
        return fn()
    except PodNetworkError:
        raise
    except NetlinkError as exc:
        raise PodNetworkError(f"{what}: netlink error {exc.code}: {exc}") from None
    except OSError as exc:
        raise PodNetworkError(f"{what}: {exc}") from None


def is_ours(link: Any, vxlan_id: int) -> bool:
    info = links.vxlan_info(link)
    return info is not None and info[0] == vxlan_id


def _delete_if_ours(netns: str | None, name: str, vxlan_id: int) -> None:
    with links.open_netns(netns) as ipr:
        link = links.find_link(ipr, name)
        if link is not None and is_ours(link, vxlan_id):
            links.delete_index(ipr, link["index"])


# ---------------------------------------------------------------- setup


def setup_steps(plan: TunnelPlan) -> list[Step]:
    site, dev, rules = plan.site, plan.vxlan, plan.notrack
    steps = [
        Step("check the pod netns", lambda: _check_pod(site)),
        notrack.notrack_step(rules),
        Step(
            f"create {dev.name}",
            lambda: _create(dev),
            lambda: _delete_if_ours(dev.netns, dev.name, dev.vxlan_id),
        ),
        Step(
            f"move {dev.name} into the pod netns",
            lambda: _move(dev),
            lambda: _delete_if_ours(dev.target_netns, dev.name, dev.vxlan_id),
        ),
        Step(
            f"rename {dev.name} to {dev.target_name}",
            lambda: _rename_up(dev),
            lambda: _delete_if_ours(dev.target_netns, dev.target_name, dev.vxlan_id),
        ),
    ]
    for redirect in plan.redirects:
        steps.append(_redirect_step(redirect, undo=redirect.src != dev.target_name))
    return steps


def _redirect_step(redirect: Redirect, *, undo: bool) -> Step:
    """A tc redirect; one from the VXLAN device goes with the device, so it has no undo."""
    src, dst, netns = redirect.src, redirect.dst, redirect.netns
    return Step(
        f"redirect {src} to {dst}",
        lambda: tc.add_redirect(src, dst, netns=netns),
        (lambda: tc.remove_redirect(src, netns=netns)) if undo else None,
    )


def _check_pod(site: TunnelSite) -> None:
    """The pod interface exists; a ``vxlan1`` of ours from an earlier attempt goes."""
    with links.open_netns(site.pod_netns) as pod:
        if links.find_link(pod, site.pod_interface) is None:
            raise PodNetworkError(
                f"interface {site.pod_interface} not found in network namespace {site.pod_netns}"
            )
        existing = links.find_link(pod, POD_VXLAN_INTERFACE)
        if existing is not None and not is_ours(existing, site.vxlan_id):
            raise PodNetworkError(
                f"{POD_VXLAN_INTERFACE} already exists in network namespace {site.pod_netns}"
                " and is not this sandbox's tunnel"
            )
        if existing is not None:  # left over from an earlier attempt
            links.delete_link(pod, POD_VXLAN_INTERFACE)


def _create(dev: VxlanDevice) -> None:
    with links.open_netns(dev.netns) as host:
        stale = links.find_link(host, dev.name)
        if stale is not None and is_ours(stale, dev.vxlan_id):
            links.delete_index(host, stale["index"])
        try:
            links.create_vxlan(host, dev.name, dev.remote, dev.vxlan_id, dev.port)
        except NetlinkError as exc:
            raise PodNetworkError(
                f"cannot create vxlan {dev.name} (id {dev.vxlan_id}, remote {dev.remote},"
                f" port {dev.port}): {exc.args[-1] if exc.args else exc}"
            ) from None


def _move(dev: VxlanDevice) -> None:
    with links.open_netns(dev.netns) as host:
        index = links.find_index(host, dev.name)
        if index is None:
            raise PodNetworkError(f"{dev.name} vanished before the move")
        links.move_link(host, index, dev.target_netns)


def _rename_up(dev: VxlanDevice) -> None:
    with links.open_netns(dev.target_netns) as pod:
        index = links.find_index(pod, dev.name)
        if index is None:
            raise PodNetworkError(
                f"interface {dev.name} not found in network namespace {dev.target_netns}"
            )
        pod.link("set", index=index, ifname=dev.target_name)
        pod.link("set", index=index, state="up")


# ---------------------------------------------------------------- teardown


def removals(site: TunnelSite) -> list[Action]:
    """Removing the tunnel at ``site``: each part on its own, so one failure stops none of
    the others; a part already gone is fine."""
    return [
        lambda: _remove_from_pod(site),
        lambda: _delete_if_ours(site.host_netns, site.temp_name, site.vxlan_id),
        lambda: notrack.remove_notrack(site.vxlan_id, netns=site.host_netns),
    ]


def _remove_from_pod(site: TunnelSite) -> None:
    """Our redirect and ``vxlan1`` (only if it is this tunnel's), and a moved temp device."""
    if not site.pod_netns or not os.path.exists(site.pod_netns):
        return
    with links.open_netns(site.pod_netns) as pod:
        ours = links.find_link(pod, POD_VXLAN_INTERFACE)
        if ours is not None and is_ours(ours, site.vxlan_id):
            if site.pod_interface:
                tc.remove_redirect(site.pod_interface, netns=site.pod_netns)
            links.delete_index(pod, ours["index"])
        moved = links.find_link(pod, site.temp_name)
        if moved is not None and is_ours(moved, site.vxlan_id):
            links.delete_index(pod, moved["index"])
