"""``kbs://<host:port>/<repo>/<type>/<tag>[?query]`` and ``kbs+<plugin>://...``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from guest.errors import ResourceUriError

RESOURCE_PLUGIN = "resource"


@dataclass(frozen=True, slots=True)
class ResourceUri:
    kbs_addr: str  # "" or "host:port"
    plugin: str
    path: tuple[str, ...]
    query: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ResourceUri:
        try:
            parts = urlsplit(uri)
        except ValueError as exc:
            raise ResourceUriError(f"invalid resource uri {uri!r}") from exc
        scheme = parts.scheme
        if scheme == "kbs":
            plugin = RESOURCE_PLUGIN
        elif scheme.startswith("kbs+") and len(scheme) > 4:
            plugin = scheme[4:]
        else:
            raise ResourceUriError(f"resource uri {uri!r} must use the kbs:// scheme")
        segments = tuple(parts.path.split("/")[1:]) if parts.path.startswith("/") else ()
        if not segments or any(s in ("", ".", "..") for s in segments) or "%" in parts.path:
            raise ResourceUriError(f"resource uri {uri!r} has an invalid path")
        if plugin == RESOURCE_PLUGIN and len(segments) != 3:
            raise ResourceUriError(f"resource uri {uri!r} must name <repo>/<type>/<tag>")
        return cls(parts.netloc, plugin, segments, parts.query or None)

    def resource_path(self) -> str:
        return "/".join(self.path)

    def __str__(self) -> str:
        scheme = "kbs" if self.plugin == RESOURCE_PLUGIN else f"kbs+{self.plugin}"
        query = f"?{self.query}" if self.query else ""
        return f"{scheme}://{self.kbs_addr}/{self.resource_path()}{query}"
