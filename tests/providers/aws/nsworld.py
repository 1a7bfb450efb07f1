"""The whole adaptor on the AWS provider against moto_server, inside one test network namespace.

moto hands out private addresses (172.31.x, 10.x) as instance IPs. Nothing may dial those from
the machine's own namespace, so everything that speaks TCP runs in a namespace the test
creates (``T``)::

    namespace T (lo only)                          machine's namespace (the test process)
    moto_server            127.0.0.1:4566 <------- NetnsExecutor: boto3 in a thread inside T
    fleet (stand-in VMs)   forwarders on <ip>:port       (world lookup, checks)
                           (each <ip>/32 on lo)
    cloud-api-adaptor aws  AWS_ENDPOINT_URL=moto   <------- shim calls: unix sockets, whose
                           dials <ip>:port (mTLS)           paths are not namespaced
    forwarders ------------------------------------------> test agents: unix sockets too

:func:`aws_adaptor_world` builds all of it and takes it down again (processes first, then the
namespace and the directory), whether the body passed or failed. ``PEERPODS_KEEP_TEST_DIR=1``
keeps the directory (logs of moto, the fleet and the adaptor) for a look after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3

from providers.base import NODE_TAG
from tests.netns import Netns, NetnsPool
from tests.providers.adaptorworld import REPO, WorldDir, adaptor_env, wait_serving
from tests.providers.aws.fleet import netns_id
from tests.providers.aws.motoserver import REGION

T = TypeVar("T")

MOTO_PORT = 4566
FORWARDER_PORT = 15150
CLONE_NEWNET = 0x40000000
# Dummy credentials for the adaptor: secret settings, so they must never reach its log.
ACCESS_KEY_ID = "AKIAPEERPODSMOTO0001"
SECRET_ACCESS_KEY = "moto-secret-6d1f0c93be27"

_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsExecutor:
    """One worker thread that lives inside a network namespace: every socket it opens (boto3's
    connections included) belongs to that namespace. The rest of the process is untouched."""

    def __init__(self, netns_path: str) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="netns", initializer=_enter_netns,
            initargs=(netns_path,),
        )

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Ec2World:
    """What the adaptor needs from moto's EC2: an AMI, a subnet and a security group."""

    ami: str
    subnet_id: str
    security_group_id: str


class Ec2View:
    """The test's own EC2 client, used from inside the namespace through a NetnsExecutor."""

    def __init__(self, executor: NetnsExecutor, endpoint: str) -> None:
        self._executor = executor
        self._endpoint = endpoint
        self._client: Any = None

    async def call(self, action: str, **kwargs: Any) -> Any:
        return await self._executor.run(self._call, action, kwargs)

    def _call(self, action: str, kwargs: Mapping[str, Any]) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "ec2", region_name=REGION, endpoint_url=self._endpoint,
                aws_access_key_id="checker", aws_secret_access_key="checker-secret",
            )
        return getattr(self._client, action)(**kwargs)

    async def world(self) -> Ec2World:
        images = (await self.call(
            "describe_images", Owners=["amazon"],
            Filters=[{"Name": "name", "Values": ["amzn-ami-hvm-*", "ubuntu/images/hvm-ssd/*"]}],
        ))["Images"]
        usable = [i for i in images if i.get("Platform") != "windows"
                  and i.get("RootDeviceName") and i.get("BlockDeviceMappings")]
        subnet = (await self.call("describe_subnets"))["Subnets"][0]
        group = (await self.call(
            "describe_security_groups",
            Filters=[{"Name": "vpc-id", "Values": [subnet["VpcId"]]}],
        ))["SecurityGroups"][0]
        return Ec2World(ami=usable[0]["ImageId"], subnet_id=subnet["SubnetId"],
                        security_group_id=group["GroupId"])

    async def instances(self, node: str) -> list[dict[str, Any]]:
        """Every instance tagged with ``node``, whatever its state."""
        answer = await self.call(
            "describe_instances", Filters=[{"Name": f"tag:{NODE_TAG}", "Values": [node]}]
        )
        return [i for r in answer["Reservations"] for i in r["Instances"]]


def _python() -> str:
    return sys.executable


def _adaptor_command() -> list[str]:
    script = Path(sys.executable).with_name("cloud-api-adaptor")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "adaptor"]


def _spawn(argv: list[str], log_path: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` from the repository root with its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, cwd=REPO, env=dict(env), stdout=log,
                                stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes] | None, grace: float) -> int | None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class AwsAdaptorWorld(WorldDir):
    ns: Netns
    node: str
    ec2: Ec2View
    world: Ec2World
    moto: subprocess.Popen[bytes]
    fleet: subprocess.Popen[bytes]
    adaptor: subprocess.Popen[bytes] | None = None
    adaptor_env: dict[str, str] = field(default_factory=dict)

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{MOTO_PORT}"

    @property
    def events_path(self) -> str:
        return os.path.join(self.root, "fleet.jsonl")

    @property
    def proxy_stats_path(self) -> str:
        return os.path.join(self.root, "proxy-stats.json")

    @property
    def adaptor_log_path(self) -> str:
        return os.path.join(self.root, "adaptor.log")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = Path(self.events_path).read_text().splitlines()
        except FileNotFoundError:
            return []
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if kind is None or e["event"] == kind]

    def adaptor_log(self) -> str:
        return self.read("adaptor.log")

    def fleet_log(self) -> str:
        return self.read("fleet.log")

    async def start_adaptor(
        self, extra_env: Mapping[str, str] | None = None, *,
        command: list[str] | None = None, endpoint: str | None = None, timeout: float = 60.0,
    ) -> subprocess.Popen[bytes]:
        """``cloud-api-adaptor aws`` in the namespace; returns once its socket answers."""
        env = {
            **adaptor_env(self, node=self.node, forwarder_port=FORWARDER_PORT),
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": endpoint or self.moto_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_SUBNET_ID": self.world.subnet_id,
            "AWS_SG_IDS": self.world.security_group_id,
            "SSH_KP_NAME": "podvm-key",
            "PODVM_AMI_ID": self.world.ami,
            **(extra_env or {}),
        }
        self.adaptor_env = env
        argv = command or [*_adaptor_command(), "aws"]
        self.adaptor = _spawn(["ip", "netns", "exec", self.ns.name, *argv],
                              self.adaptor_log_path, env)
        await wait_serving(self.adaptor, self.socket, self.adaptor_log, timeout)
        return self.adaptor

    def stop_adaptor(self, grace: float = 20.0) -> int | None:
        status = _stop(self.adaptor, grace)
        self.adaptor = None
        return status

    def stop_fleet(self, grace: float = 10.0) -> int | None:
        """Stop the stand-in VMs (the timed proxy's stats are written on the way out)."""
        return _stop(self.fleet, grace)


async def _wait_moto(executor: NetnsExecutor, proc: subprocess.Popen[bytes],
                     timeout: float) -> None:
    url = f"http://127.0.0.1:{MOTO_PORT}/moto-api/"

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    async with asyncio.timeout(timeout):
        while not await executor.run(probe):
            if proc.poll() is not None:
                raise AssertionError(f"moto_server exited with {proc.returncode}")
            await asyncio.sleep(0.1)


async def _wait_fleet(world: AwsAdaptorWorld, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            ready = world.events("ready")
            if ready:
                return ready[0]
            if world.fleet.poll() is not None:
                raise AssertionError(f"fleet exited with {world.fleet.returncode}: "
                                     f"{world.fleet_log()[-3000:]}")
            await asyncio.sleep(0.05)


def _moto_command() -> list[str]:
    beside = Path(sys.executable).with_name("moto_server")
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "moto.server"]


@contextlib.asynccontextmanager
async def aws_adaptor_world(
    node: str, *, timed_proxy: bool = False, fleet_poll: float = 0.1,
    keep_dir: bool = False,
) -> AsyncIterator[AwsAdaptorWorld]:
    """Namespace + moto_server + fleet in it (the adaptor is started by the caller with
    :meth:`AwsAdaptorWorld.start_adaptor`). Everything is stopped and removed on exit."""
    root = tempfile.mkdtemp(prefix="ppaws", dir="/tmp")  # short: unix socket paths
    os.makedirs(os.path.join(root, "agents"))
    pool = NetnsPool()
    executor: NetnsExecutor | None = None
    moto: subprocess.Popen[bytes] | None = None
    fleet: subprocess.Popen[bytes] | None = None
    world: AwsAdaptorWorld | None = None
    try:
        ns = pool.create("aws")
        executor = NetnsExecutor(ns.path)
        moto_env = {**os.environ, "MOTO_ENABLE_AMI_VALIDATION": "true",
                    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"}
        moto = _spawn(["ip", "netns", "exec", ns.name, *_moto_command(),
                       "-H", "127.0.0.1", "-p", str(MOTO_PORT)],
                      os.path.join(root, "moto.log"), moto_env)
        await _wait_moto(executor, moto, 30.0)
        ec2 = Ec2View(executor, f"http://127.0.0.1:{MOTO_PORT}")
        found = await ec2.world()
        fleet_argv = [
            "ip", "netns", "exec", ns.name, _python(), "-m", "tests.providers.aws.fleet",
            "--endpoint", f"http://127.0.0.1:{MOTO_PORT}", "--node", node,
            "--port", str(FORWARDER_PORT), "--agents", os.path.join(root, "agents"),
            "--events", os.path.join(root, "fleet.jsonl"),
            "--poll-interval", str(fleet_poll), "--not-in-netns", str(netns_id()),
        ]
        if timed_proxy:
            fleet_argv += ["--proxy-stats", os.path.join(root, "proxy-stats.json")]
        fleet = _spawn(fleet_argv, os.path.join(root, "fleet.log"),
                       {**os.environ, "PYTHONPATH": REPO})
        world = AwsAdaptorWorld(root=root, ns=ns, node=node, ec2=ec2, world=found,
                                moto=moto, fleet=fleet)
        await _wait_fleet(world, 30.0)
        yield world
    finally:
        if world is not None:
            world.stop_adaptor()
        if world is not None:
            world.stop_fleet()
        else:
            _stop(fleet, 10.0)
        _stop(moto, 10.0)
        if executor is not None:
            executor.close()
        pool.close()
        if not keep_dir and not os.environ.get("PEERPODS_KEEP_TEST_DIR"):
            shutil.rmtree(root, ignore_errors=True)
