"""An attestation token as the guest sees it: opaque, except ``exp`` and ``nbf``."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from guest.errors import ResponseError


@dataclass(frozen=True, slots=True, repr=False)
class Token:
    content: str
    claims: dict[str, Any]

    def __repr__(self) -> str:  # never print the token itself
        return f"Token(exp={self.claims.get('exp')})"

    @classmethod
    def parse(cls, content: str) -> Token:
        parts = content.split(".")
        if len(parts) != 3:
            raise ResponseError("attestation token is not a JWT")
        try:
            raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
            claims = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ResponseError("attestation token claims are not JSON") from exc
        if not isinstance(claims, dict):
            raise ResponseError("attestation token claims are not an object")
        return cls(content, claims)

    def valid(self, *, margin: float = 0.0, now: float | None = None) -> bool:
        """Usable for ``margin`` more seconds (``nbf`` reached, ``exp`` not yet)."""
        now = time.time() if now is None else now
        exp, nbf = self.claims.get("exp"), self.claims.get("nbf")
        if isinstance(nbf, int | float) and now < nbf:
            return False
        return not (isinstance(exp, int | float) and now + margin >= exp)
