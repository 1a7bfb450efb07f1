"""``GetToken("coco_as")``: evidence straight to a CoCo Attestation Service (``/attestation``).

As upstream: the primary attester's evidence for empty report data, base64url (no padding)
of its JSON, in ``{"verification_requests": [{"tee", "evidence"}], "policy_ids": []}``; the
reply body is the token. Upstream sends no runtime data, so this token binds no TEE key.
"""

from __future__ import annotations

import base64
import json

import aiohttp

from guest.attesters.base import Attester
from guest.errors import KbsError
from guest.kbs.http import MAX_RESPONSE, TIMEOUT, error_info, read_limited


async def get_token(session: aiohttp.ClientSession, as_url: str, attester: Attester) -> bytes:
    evidence = await attester.evidence(b"")
    encoded = base64.urlsafe_b64encode(json.dumps(evidence, separators=(",", ":")).encode())
    body = {
        "verification_requests": [{"tee": attester.tee, "evidence": encoded.rstrip(b"=").decode()}],
        "policy_ids": [],
    }
    url = f"{as_url.rstrip('/')}/attestation"
    try:
        async with session.post(url, json=body, timeout=TIMEOUT) as response:
            payload = await read_limited(response, MAX_RESPONSE)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KbsError(f"Remote Attestation Failed: {exc}") from exc
    if status != 200:
        raise KbsError(f"Remote Attestation Failed, AS Response: {error_info(payload)}")
    return payload
