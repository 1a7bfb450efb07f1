"""``bash scripts/quickstart.sh`` as the README gives it: its exit status, its report, and
that it leaves nothing behind, whether the demo passes or fails."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import netns_names, processes_mentioning

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "quickstart.sh"
RUN_TIMEOUT = 120.0


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str

    def field(self, name: str) -> str:
        match = re.search(rf"^{name}:\s+(.*)$", self.out, re.MULTILINE)
        assert match, f"no '{name}:' line in the report:\n{self.out}\n{self.err}"
        return match.group(1)

    @property
    def logs(self) -> Path:
        return Path(self.field("logs").split(" ", 1)[0])

    @property
    def temp_dir(self) -> Path:
        match = re.search(r"socket (/tmp/ppqs-\w+)/hv\.sock", self.out)
        assert match, self.out
        return Path(match.group(1))

    def instance_ids(self) -> set[str]:
        return set(re.findall(r"instance=([0-9a-f]{10})\b",
                              (self.logs / "adaptor.log").read_text()))


@pytest.fixture
def log_dirs() -> Iterator[list[Path]]:
    """Log directories the runs report; removed after the test."""
    dirs: list[Path] = []
    try:
        yield dirs
    finally:
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)


async def quickstart(log_dirs: list[Path], **env: str) -> Run:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("QUICKSTART_", "PEERPODS_"))}
    proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), cwd=REPO, env={**clean, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(RUN_TIMEOUT):
        out, err = await proc.communicate()
    run = Run(proc.returncode if proc.returncode is not None else -1,
              out.decode(errors="replace"), err.decode(errors="replace"))
    match = re.search(r"^logs:\s+(/tmp/peerpods-quickstart-\w+)", run.out, re.MULTILINE)
    if match:
        log_dirs.append(Path(match.group(1)))
    return run


def residue(run: Run) -> list[str]:
    """What a quick start run left behind, apart from its log directory."""
    found = []
    tag = run.logs.name.rsplit("-", 1)[1]
    found += [f"network namespace {n}" for n in netns_names() if n.startswith(f"ppqs-{tag}-")]
    for instance_id in run.instance_ids():
        found += [f"network namespace {n}" for n in netns_names()
                  if n.startswith(f"ppvm-{instance_id}")]
    if run.temp_dir.exists():
        found.append(f"directory {run.temp_dir}")
    found += [f"process {p}" for p in processes_mentioning(str(run.temp_dir))]
    return found


def step_results(run: Run) -> dict[str, str]:
    """``{"create": "ok", "start": "FAILED", ...}`` from the demo's lines."""
    return dict(re.findall(r"^\s+(create|start|check|stop)\s+(ok|FAILED)\s", run.out,
                           re.MULTILINE))


@pytest.mark.root
@pytest.mark.netns
async def test_quickstart_with_network_namespaces(log_dirs: list[Path]) -> None:
    run = await quickstart(log_dirs)
    assert run.status == 0, f"{run.out}\n{run.err}"
    assert run.field("mode").startswith("network namespaces")
    assert "VXLAN tunnel" in run.field("mode")
    assert step_results(run) == {"create": "ok", "start": "ok", "check": "ok", "stop": "ok"}
    assert re.search(r"^result:\s+passed in [0-9.]+s$", run.out, re.MULTILINE)
    assert "leftover" not in run.out
    log = (run.logs / "adaptor.log").read_text()
    assert re.search(r"vxlan tunnel id \d+ to 198\.18\.0\.\d+ port 4789 set up", log)
    assert re.search(r"vxlan tunnel id \d+ removed", log)
    assert "SIGTERM received" in log and "server stopped" in log
    assert (run.logs / "demo.txt").read_text().strip().endswith("demo passed")
    assert residue(run) == []


@pytest.mark.root
@pytest.mark.netns
async def test_quickstart_failure_is_reported_and_cleaned_up(log_dirs: list[Path]) -> None:
    # A pod VM whose agent never starts: StartVM fails once the proxy gives up.
    run = await quickstart(
        log_dirs, QUICKSTART_ADAPTOR_ARGS="--local-agent-command false --proxy-timeout 3s")
    assert run.status == 1, f"{run.out}\n{run.err}"
    assert step_results(run) == {"create": "ok", "start": "FAILED", "stop": "ok"}
    assert "result:" not in run.out
    assert "peerpodctl demo failed" in run.err
    assert "Last lines of the adaptor log" in run.err
    assert "StartVM failed" in run.err  # the tail of the adaptor log is printed
    assert run.instance_ids(), "the failed StartVM created no pod VM"
    assert residue(run) == []


async def test_quickstart_without_namespaces(log_dirs: list[Path]) -> None:
    run = await quickstart(log_dirs, QUICKSTART_MODE="loopback")
    assert run.status == 0, f"{run.out}\n{run.err}"
    assert run.field("mode").startswith("loopback (LOCAL_NETNS=off TUNNEL_TYPE=none)")
    assert step_results(run) == {"create": "ok", "start": "ok", "check": "ok", "stop": "ok"}
    assert "vxlan tunnel" not in (run.logs / "adaptor.log").read_text()
    assert '"tunnel_type": "none"' in (run.logs / "adaptor.log").read_text()
    assert residue(run) == []
