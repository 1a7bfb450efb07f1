"""The ``#cloud-config`` user-data that carries a pod VM's files.

The adaptor renders it, the pod VM's ``process-user-data`` parses it. Rendering reproduces
upstream's text template byte for byte::

    #cloud-config

    write_files:
      - path: /run/peerpod/apf.json
        content: |
          {
          ...

Every content line is indented six spaces under a ``content: |`` literal block; empty content
leaves the ``content`` key out. Because the literal block uses YAML's default ("clip")
chomping, parsing gives back the content with exactly one final newline: ``"x"``, ``"x\\n"``
and ``"x\\n\\n"`` all come back as ``"x\\n"``. Content that already ends in a single newline
(a PEM file, a TOML file, a base64 line followed by ``\\n``) comes back byte for byte; JSON and
base64 without a final newline come back with one added, which neither format minds.
:func:`normalized` tells what a content will read back as.

Parsing is strict like upstream's ``yaml.UnmarshalStrict`` into ``{write_files: [{path,
content}]}``: unknown keys, non-string values, duplicate keys, anchors and aliases are errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, NodeEvent
from yaml.nodes import MappingNode, Node

from runtime.errors import FormatError

PEERPOD_DIR = "/run/peerpod"
APF_JSON_PATH = f"{PEERPOD_DIR}/apf.json"
AUTH_JSON_PATH = f"{PEERPOD_DIR}/auth.json"
INITDATA_PATH = f"{PEERPOD_DIR}/initdata"
SCRATCH_SPACE_MARKER_PATH = f"{PEERPOD_DIR}/scratch-space.marker"
AA_TOML_PATH = f"{PEERPOD_DIR}/aa.toml"
CDH_TOML_PATH = f"{PEERPOD_DIR}/cdh.toml"
POLICY_REGO_PATH = f"{PEERPOD_DIR}/policy.rego"
INITDATA_DIGEST_PATH = f"{PEERPOD_DIR}/initdata.digest"

CIDATA_DIR = "/media/cidata"
CIDATA_USER_DATA_PATH = f"{CIDATA_DIR}/user-data"

#: Paths a ``write_files`` entry may target (upstream ``WriteFilesList``). ``policy.rego``
#: and ``initdata.digest`` are not in it: they only come from initdata processing.
WRITE_FILES_ALLOWED: frozenset[str] = frozenset(
    {
        AA_TOML_PATH,
        CDH_TOML_PATH,
        APF_JSON_PATH,
        AUTH_JSON_PATH,
        INITDATA_PATH,
        SCRATCH_SPACE_MARKER_PATH,
    }
)

#: Paths that keys of the initdata ``[data]`` table are extracted to (upstream
#: ``InitdDataFilesList``).
INITDATA_FILES_ALLOWED: frozenset[str] = frozenset({AA_TOML_PATH, CDH_TOML_PATH, POLICY_REGO_PATH})

#: Upstream caps ``auth.json`` in user-data at this many bytes.
AUTH_JSON_MAX_BYTES = 12288

#: Largest user-data accepted by :func:`parse` (Azure caps user-data at 64 KiB anyway).
MAX_USER_DATA_BYTES = 1024 * 1024

HEADER = "#cloud-config"


class UserDataError(FormatError):
    """User-data that cannot be rendered faithfully or does not parse as our cloud-config."""


@dataclass(frozen=True, slots=True)
class WriteFile:
    path: str
    content: str


# ---------------------------------------------------------------------------- rendering

# A path is emitted as a plain YAML scalar, so keep to characters that stay a plain string.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
# Characters YAML accepts in a stream, minus every line break but "\n" (YAML would
# normalise "\r", NEL, LS and PS into "\n" and change the content).
_BAD_CONTENT_CHAR = re.compile(
    "[^\x09\x0a\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
    "|[\u2028\u2029]"
)


def _split_lines(text: str) -> list[str]:
    """Go ``splitLines``: split on ``\\n`` and drop one trailing empty piece."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _check_content(path: str, content: str) -> None:
    bad = _BAD_CONTENT_CHAR.search(content)
    if bad is not None:
        raise UserDataError(
            f"{path}: content has character U+{ord(bad.group()):04X} at offset {bad.start()}, "
            "which a YAML literal block cannot carry"
        )
    # YAML takes a literal block's indentation from its first non-empty line: spaces at the
    # start of that line, or on blank lines before it, would be read as indentation, and Go's
    # yaml.v2 (upstream's pod VM parser) rejects a tab there.
    for line in _split_lines(content):
        if line == "":
            continue
        if line.startswith((" ", "\t")):
            raise UserDataError(
                f"{path}: content's first non-empty line starts with "
                f"{'a space' if line[0] == ' ' else 'a tab'}, "
                "which a YAML literal block cannot carry"
            )
        break


def render(files: Sequence[WriteFile]) -> str:
    """Render ``files`` as upstream's ``#cloud-config`` text (see the module docstring).

    Raises :class:`UserDataError` for a path or content that the format cannot carry
    faithfully (upstream would emit corrupted YAML for those).
    """
    out = [HEADER]
    if files:
        out.append("\n\nwrite_files:")
    for item in files:
        if not _SAFE_PATH.fullmatch(item.path):
            raise UserDataError(f"path {item.path[:200]!r} is not an absolute plain path")
        out.append(f"\n  - path: {item.path}")
        if item.content:
            _check_content(item.path, item.content)
            out.append("\n    content: |")
            for line in _split_lines(item.content):
                out.append(f"\n      {line}")
    out.append("\n")
    return "".join(out)


def normalized(content: str) -> str:
    """The content that :func:`parse` gives back for ``content`` after :func:`render`."""
    body = content.rstrip("\n")
    return f"{body}\n" if body else ""


# ----------------------------------------------------------------------------- parsing


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and duplicate mapping keys."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            raise ConstructorError(
                None,
                None,
                "YAML anchors and aliases are not allowed",
                event.start_mark,  # type: ignore[arg-type]
            )
        return Composer.compose_node(self, parent, index)  # type: ignore[arg-type]

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: SafeConstructor reports it
                if duplicate:
                    raise ConstructorError(
                        None, None, f"duplicate key {str(key)[:80]!r}", key_node.start_mark
                    )
        return SafeConstructor.construct_mapping(self, node, deep=deep)  # type: ignore[arg-type]


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    """A message naming the problem and its position, never quoting the input."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{'; '.join(parts) or 'invalid YAML'}{where}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character U+{exc.character:04X} at offset {exc.position} is not allowed"
    return type(exc).__name__


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse(text: str | bytes) -> list[WriteFile]:
    """Parse cloud-config user-data into its ``write_files`` entries.

    Accepts exactly a YAML mapping with at most the key ``write_files``, whose value is a
    list of mappings with the string keys ``path`` (required) and ``content`` (optional).
    An empty document (``#cloud-config`` alone) gives no files.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_USER_DATA_BYTES:
            raise UserDataError(f"user-data is {len(text)} bytes, over {MAX_USER_DATA_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserDataError(f"user-data is not UTF-8 (byte offset {exc.start})") from None
    elif len(text) > MAX_USER_DATA_BYTES:
        raise UserDataError(f"user-data is {len(text)} characters, over {MAX_USER_DATA_BYTES}")
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # strict SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserDataError(f"user-data is not valid YAML: {_describe_yaml_error(exc)}") from None
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise UserDataError(
            f"user-data must be a YAML mapping with write_files, got {_type_name(doc)}"
        )
    unknown = sorted(str(k)[:80] for k in doc if k != "write_files")
    if unknown:
        raise UserDataError(f"user-data has unknown key(s): {', '.join(unknown)}")
    entries = doc.get("write_files")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserDataError(f"write_files must be a list, got {_type_name(entries)}")
    files: list[WriteFile] = []
    for index, entry in enumerate(entries):
        where = f"write_files[{index}]"
        if not isinstance(entry, dict):
            raise UserDataError(f"{where} must be a mapping, got {_type_name(entry)}")
        extra = sorted(str(k)[:80] for k in entry if k not in ("path", "content"))
        if extra:
            raise UserDataError(f"{where} has unknown key(s): {', '.join(extra)}")
        path = entry.get("path")
        if not isinstance(path, str) or not path:
            raise UserDataError(f"{where}.path must be a non-empty string, got {_type_name(path)}")
        content = entry.get("content", "")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise UserDataError(f"{where}.content must be a string, got {_type_name(content)}")
        files.append(WriteFile(path=path, content=content))
    return files
