"""The recipe's sources, without building: the boot chain's units, the helper scripts and
``podvm-image/tool.py`` (cache key, agent policies, manifest)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.podvm_image import units
from tests.podvm_image.image import RECIPE

FILES = RECIPE / "files"
SYSTEM = FILES / "etc/systemd/system"
LIBEXEC = FILES / "usr/libexec/peerpods"


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("podvm_image_tool", RECIPE / "tool.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_units() -> dict[str, units.Unit]:
    return {name: units.parse((SYSTEM / name).read_text()) for name in units.UNITS}


def test_the_boot_chain_starts_in_the_specified_order() -> None:
    parsed = recipe_units()
    assert units.chain_order(parsed) == list(units.CHAIN)
    for name in units.CHAIN:
        assert "multi-user.target" in units.words(parsed[name], "Install", "WantedBy"), name


def test_each_unit_of_the_chain_does_what_the_chain_needs() -> None:
    u = recipe_units()
    pud = u["process-user-data.service"]
    assert pud["Service"]["Type"] == ["oneshot"] and pud["Service"]["RemainAfterExit"] == ["yes"]
    assert pud["Service"]["ExecStartPre"] == [
        "-/usr/bin/udevadm settle --timeout=60",
        "-/bin/mount -t iso9660 -o ro /dev/disk/by-label/cidata /media/cidata"
    ]
    assert pud["Service"]["ExecStart"] == ["/opt/peerpods/bin/process-user-data provision-files"]
    # the attestation components run only when the initdata configured them
    assert u["attestation-agent.service"]["Unit"]["ConditionPathExists"] == [
        "/run/peerpod/aa.toml"
    ]
    for name in ("confidential-data-hub.service", "api-server-rest.service"):
        assert u[name]["Unit"]["ConditionPathExists"] == [
            "/run/peerpod/aa.toml", "/run/peerpod/cdh.toml"
        ], name
    cdh = u["confidential-data-hub.service"]["Service"]
    assert ("CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS=file:///run/peerpod/auth.json"
            in cdh["Environment"])
    assert "OCICRYPT_KEYPROVIDER_CONFIG=/etc/ocicrypt_config.json" in cdh["Environment"]
    agent = u["kata-agent.service"]
    assert units.words(agent, "Unit", "BindsTo") == {"netns@podns.service"}
    assert "netns@podns.service" in units.words(agent, "Unit", "After")
    assert agent["Service"]["ExecStart"] == [
        "/usr/local/bin/kata-agent --config /etc/agent-config.toml"
    ]
    assert agent["Service"]["ExecStartPost"] == [
        "/usr/libexec/peerpods/wait-for-socket /run/kata-containers/agent.sock 300"
    ]
    assert agent["Service"]["ExecStopPost"] == ["-/usr/local/bin/kata-agent-clean"]
    assert agent["Unit"]["ConditionPathExists"] == ["/usr/local/bin/kata-agent"]
    apf = u["agent-protocol-forwarder.service"]
    assert apf["Service"]["Type"] == ["notify"]
    # without a kata-agent the forwarder still starts: it wants the agent, never requires it
    assert units.words(apf, "Unit", "Wants") == {"kata-agent.service"}
    assert "kata-agent.service" not in units.words(apf, "Unit", "Requires")
    api = u["api-server-rest.service"]["Service"]["ExecStart"][0]
    assert api.startswith("/usr/bin/ip netns exec podns ") and api.endswith("--features all")
    netns = u["netns@.service"]["Service"]
    assert netns["ExecStart"] == ["/usr/bin/ip netns add %I",
                                  "/usr/bin/ip netns exec %I /usr/bin/ip link set lo up"]


def test_tmpfiles_and_agent_configuration() -> None:
    tmpfiles = (FILES / "etc/tmpfiles.d/peerpods.conf").read_text().splitlines()
    assert "C /run/peerpod/auth.json 0600 root root - /etc/kata-oci/empty-auth.json" in tmpfiles
    assert not any("policy.rego" in line for line in tmpfiles)  # allow-all: debug only
    assert json.loads((FILES / "etc/kata-oci/empty-auth.json").read_text()) == {"auths": {}}
    config = (FILES / "etc/agent-config.toml").read_text()
    assert 'server_addr = "unix:///run/kata-containers/agent.sock"' in config
    assert 'guest_components_procs = "none"' in config


def test_wait_for_socket_waits_for_a_socket_and_gives_up(tmp_path: Path) -> None:
    script = str(LIBEXEC / "wait-for-socket")
    missing = subprocess.run(["sh", script, str(tmp_path / "none.sock"), "0"],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert "did not appear" in missing.stderr
    path = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert subprocess.run(["sh", script, str(path), "0"]).returncode == 0
    plain = tmp_path / "file"
    plain.write_text("")
    assert subprocess.run(["sh", script, str(plain), "0"], capture_output=True).returncode == 1


def test_guest_component_rejects_an_unknown_implementation(tmp_path: Path) -> None:
    text = (LIBEXEC / "guest-component").read_text()
    script = tmp_path / "guest-component"
    script.write_text(text.replace("/etc/peerpods/guest-components", str(tmp_path / "setting")))
    (tmp_path / "setting").write_text("GUEST_COMPONENTS=go\n")
    done = subprocess.run(["sh", str(script), "attestation-agent"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "GUEST_COMPONENTS=go is neither python nor rust" in done.stderr


def test_policies_name_every_agent_request(tmp_path: Path) -> None:
    tool = load_tool()
    requests = tool.agent_requests()
    assert "CreateContainerRequest" in requests and "SetPolicyRequest" in requests
    tool.write_policies(tmp_path)

    def rules(name: str) -> dict[str, str]:
        lines = (tmp_path / name).read_text().splitlines()
        assert lines[0] == "package agent_policy"
        found = {}
        for line in lines[2:]:
            _, request, _, value = line.split()
            found[request] = value
        assert sorted(found) == requests
        return found

    assert set(rules("allow-all.rego").values()) == {"true"}
    except_exec = rules("allow-all-except-exec-process.rego")
    assert {r for r, v in except_exec.items() if v == "false"} == {"ExecProcessRequest"}
    setpolicy_only = rules("disallow-all-except-setpolicy.rego")
    assert {r for r, v in setpolicy_only.items() if v == "true"} == {"SetPolicyRequest"}


def test_inputs_hash_follows_files_and_options(tmp_path: Path) -> None:
    tool = load_tool()
    for name in tool.INPUTS:
        source = RECIPE.parent / name
        if source.is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp_path / name)
        else:
            (tmp_path / name).mkdir(parents=True)
    (tmp_path / "forwarder/x.py").write_text("a = 1\n")
    first = tool.inputs_hash(tmp_path, "variant=default")
    assert tool.inputs_hash(tmp_path, "variant=default") == first
    assert tool.inputs_hash(tmp_path, "variant=debug") != first
    (tmp_path / "forwarder/__pycache__").mkdir()
    (tmp_path / "forwarder/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    assert tool.inputs_hash(tmp_path, "variant=default") == first  # caches do not count
    (tmp_path / "forwarder/x.py").write_text("a = 2\n")
    assert tool.inputs_hash(tmp_path, "variant=default") != first


def test_manifest_reads_the_dpkg_database_and_the_venv(tmp_path: Path) -> None:
    tool = load_tool()
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: systemd\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 252.36-1\nDescription: system\n and service manager\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
    )
    meta = tmp_path / "opt/peerpods/lib/python3.11/site-packages/peerpods-0.1.0.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.4\nName: peerpods\nVersion: 0.1.0\n")
    disk = tmp_path / "podvm.qcow2"
    disk.write_bytes(b"qcow")
    found = tool.manifest(tmp_path, {"variant": "default", "slot.kata-agent": "missing",
                                     "slot.attestation-agent": "python (this project)"}, [disk])
    assert found["debian_packages"] == {"systemd": "252.36-1"}
    assert found["python_distributions"] == {"peerpods": "0.1.0"}
    assert found["project"] == {"name": "peerpods", "version": "0.1.0"}
    assert found["missing"] == ["kata-agent"]
    assert found["images"]["podvm.qcow2"]["bytes"] == 4
    assert "PCR 8" in found["conventions"]["pcr"]


@pytest.mark.parametrize("args", [["--variant", "tiny"], ["--bogus"]])
def test_build_rejects_bad_options(args: list[str]) -> None:
    done = subprocess.run(["bash", str(RECIPE / "build"), *args], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("podvm-image: ")


def test_process_user_data_extends_pcr8_in_this_image() -> None:
    """process-user-data leaves PCR 8 alone by default (as upstream's, whose image extends it
    from a unit); this image turns the extension on, fail-closed."""
    pud = recipe_units()["process-user-data.service"]
    assert "PUD_EXTEND_PCR8=true" in pud["Service"]["Environment"]
