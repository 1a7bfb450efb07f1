"""When Kubernetes access is on, and that the client reaches the API server in-cluster
(service-account token, CA, KUBERNETES_SERVICE_HOST/PORT) as client-go's InClusterConfig."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lightkube.resources.core_v1 import Node

from adaptor.__main__ import make_cluster
from adaptor.cli import RunCommand, parse_command
from k8s.access import KubeError, detect, make_client
from k8s.cluster import Cluster
from tests.fakes.kubeapi import FakeKubeAPI
from tests.k8s.conftest import NODE


def service_account(tmp_path: Path, api: FakeKubeAPI) -> Path:
    directory = tmp_path / "sa"
    directory.mkdir()
    (directory / "token").write_text("adaptor-token\n")
    (directory / "namespace").write_text("confidential-containers-system")
    shutil.copy(api.ca_path, directory / "ca.crt")
    return directory


async def test_in_cluster(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    sa = service_account(tmp_path, kubeapi)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kubeapi.port)}
    target = detect(env, "", str(sa))
    assert target is not None and target.source == "in-cluster service account"
    client = make_client(target, field_manager="test")
    node = await client.get(Node, NODE)
    await client.close()
    assert node.metadata is not None and node.metadata.name == NODE
    assert detect({}, "", str(sa)) is None  # no service host: not in a cluster
    (sa / "token").unlink()
    assert detect(env, "", str(sa)) is None  # no token mounted


async def test_kubeconfig_wins_and_a_bad_one_is_an_error(kubeapi: FakeKubeAPI,
                                                         tmp_path: Path) -> None:
    sa = service_account(tmp_path, kubeapi)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
    path = kubeapi.kubeconfig(tmp_path / "config")
    target = detect(env, str(path), str(sa))
    assert target is not None and target.source == f"kubeconfig {path}"
    with pytest.raises(KubeError):
        detect({}, str(tmp_path / "missing"))


async def test_the_adaptor_turns_it_on_only_with_access(kubeapi: FakeKubeAPI,
                                                        tmp_path: Path) -> None:
    command = parse_command(["libvirt"], {})
    assert isinstance(command, RunCommand)
    assert make_cluster(command, NODE, {}) is None
    path = kubeapi.kubeconfig(tmp_path / "config")
    command = parse_command(["libvirt"], {"KUBECONFIG": str(path), "NODE_NAME": NODE})
    assert isinstance(command, RunCommand)
    cluster = make_cluster(command, NODE, {})
    assert isinstance(cluster, Cluster)
    await cluster.aclose()
