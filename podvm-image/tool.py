"""Helpers of ``podvm-image/build`` that are easier in Python than in shell.

``tool.py inputs-hash REPO OPTIONS``
    sha256 over every file the image is built from (this recipe, the lock, the project's
    packages and pyproject.toml) and the build options: the cache key of a build.
``tool.py policies DIR``
    writes the bundled agent policies (allow-all, allow-all-except-exec-process,
    disallow-all-except-setpolicy), one rule per ``grpc.AgentService`` method of the protos.
``tool.py manifest ROOT OUT.json KEY=VALUE... -- IMAGE...``
    writes the image's manifest: Debian package versions (from ROOT's dpkg database), Python
    distributions of the venv, the slots, the initdata/PCR conventions, image checksums.

Runs with the build machine's Python and the project importable (the recipe's own venv).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

#: What the image is built from, relative to the repository (directories are walked).
INPUTS = (
    "podvm-image", "requirements/podvm.txt", "pyproject.toml",
    "protocols", "runtime", "podnetwork", "forwarder", "providers", "guest", "adaptor",
)
SKIPPED_PARTS = {"__pycache__", "out", ".mypy_cache", ".ruff_cache"}
EXEC_PROCESS = {"ExecProcessRequest"}
SET_POLICY = {"SetPolicyRequest"}

#: The conventions the image follows for initdata and the TPM, recorded in the manifest.
CONVENTIONS = {
    "initdata": "user-data file /run/peerpod/initdata (base64 of gzip of the TOML, "
                "upstream's encoding); process-user-data writes its [data] files "
                "(aa.toml, cdh.toml, policy.rego) to /run/peerpod and the digest as lowercase "
                "hex to /run/peerpod/initdata.digest",
    "digest": "the initdata TOML's algorithm (sha256, sha384 or sha512) over the TOML bytes",
    "pcr": "PCR 8 (sha256 bank) is extended once a boot with the digest's first 32 bytes "
           "(tpm2_pcrextend 8:sha256=<first 64 hex digits>, as upstream) by "
           "process-user-data when /dev/tpmrm0 exists",
    "agent_policy": "/etc/kata-opa/default-policy.rego -> /run/peerpod/policy.rego",
}


def _files(repo: Path) -> Iterator[Path]:
    for name in INPUTS:
        top = repo / name
        if top.is_file():
            yield top
            continue
        for path in sorted(top.rglob("*")):
            parts = set(path.relative_to(repo).parts)
            if path.is_file() and not parts & SKIPPED_PARTS and path.suffix != ".pyc":
                yield path


def inputs_hash(repo: Path, options: str) -> str:
    digest = hashlib.sha256(options.encode() + b"\0")
    for path in _files(repo):
        digest.update(str(path.relative_to(repo)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def agent_requests() -> list[str]:
    from protocols.kata import agent_pb2

    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    return sorted({m.input_type.name for m in service.methods})


def policy(allowed: set[str] | None, denied: set[str]) -> str:
    """A Rego policy: every request allowed except ``denied``, or only ``allowed``."""
    lines = ["package agent_policy", ""]
    for request in agent_requests():
        allow = request in allowed if allowed is not None else request not in denied
        lines.append(f"default {request} := {'true' if allow else 'false'}")
    return "\n".join(lines) + "\n"


def write_policies(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "allow-all.rego").write_text(policy(None, set()))
    (out / "allow-all-except-exec-process.rego").write_text(policy(None, EXEC_PROCESS))
    (out / "disallow-all-except-setpolicy.rego").write_text(policy(SET_POLICY, set()))


def debian_packages(root: Path) -> dict[str, str]:
    """name -> version of every installed package in ROOT's dpkg status file."""
    packages: dict[str, str] = {}
    for stanza in (root / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            arch = fields.get("Architecture", "")
            name = fields["Package"]
            if arch not in ("all", "amd64", ""):
                name = f"{name}:{arch}"
            packages[name] = fields.get("Version", "")
    return dict(sorted(packages.items()))


def python_distributions(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for meta in sorted(root.glob("opt/peerpods/lib/python3*/site-packages/*.dist-info/METADATA")):
        fields = dict(
            line.split(": ", 1) for line in meta.read_text(errors="replace").splitlines()[:20]
            if ": " in line
        )
        if "Name" in fields:
            found[fields["Name"]] = fields.get("Version", "")
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(root: Path, settings: dict[str, str], images: Sequence[Path]) -> dict[str, object]:
    python = python_distributions(root)
    slots = {key.removeprefix("slot."): value
             for key, value in settings.items() if key.startswith("slot.")}
    return {
        "project": {"name": "peerpods", "version": python.get("peerpods", "unknown")},
        "variant": settings.get("variant", ""),
        "inputs_sha256": settings.get("inputs", ""),
        "boot": ["uefi", "bios"],
        "slots": slots,
        "missing": sorted(name for name, value in slots.items() if value == "missing"),
        "guest_components": settings.get("guest_components", "python"),
        "conventions": CONVENTIONS,
        "debian_packages": debian_packages(root),
        "python_distributions": python,
        "images": {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
                   for path in images},
    }


def main(argv: Sequence[str]) -> int:
    command, args = argv[0], list(argv[1:])
    if command == "inputs-hash":
        print(inputs_hash(Path(args[0]), args[1]))
    elif command == "policies":
        write_policies(Path(args[0]))
    elif command == "manifest":
        split = args.index("--")
        root, out = Path(args[0]), Path(args[1])
        settings = dict(item.split("=", 1) for item in args[2:split])
        text = json.dumps(manifest(root, settings, [Path(p) for p in args[split + 1:]]), indent=2)
        out.write_text(text + "\n")
    else:
        sys.stderr.write(f"tool.py: unknown command {command}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
