"""The adaptor's orphan sweep on GCP (upstream's peerpod-ctrl has no GCP support): it finds
the node's pod VMs by label, honours their age from ``creationTimestamp`` and deletes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adaptor.sweep import OrphanSweeper
from tests.providers.gcp.computeserver import ComputeServer
from tests.providers.gcp.conftest import ProviderFactory, make_request


class NoSandboxes:
    """The sandbox manager of an adaptor that knows no sandbox (restarted, records lost)."""

    def records(self) -> list[object]:
        return []

    def sandboxes(self) -> list[object]:
        return []


async def test_sweep_deletes_old_pod_vms_of_this_node_only(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    provider = make_provider()
    old = await provider.create_instance(make_request(node, pod="old"))
    young = await provider.create_instance(make_request(node, pod="young"))
    other = await provider.create_instance(make_request("node-other", pod="other"))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    compute.instances[old.name]["creationTimestamp"] = an_hour_ago.isoformat()
    compute.instances[other.name]["creationTimestamp"] = an_hour_ago.isoformat()
    sweeper = OrphanSweeper(provider, NoSandboxes(), None,  # type: ignore[arg-type]
                            node_name=node, grace=timedelta(minutes=15),
                            interval=timedelta(minutes=10))
    result = await sweeper.sweep()
    assert result.deleted == (old.id,)
    assert result.too_young == (young.id,)
    assert sorted(compute.instances) == sorted([young.name, other.name])
