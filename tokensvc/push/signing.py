"""The HMAC signature of each delivery to a forward target, and its check.

Every delivery is ``POST <target url>`` with a JSON body and these headers:

- ``X-Tokensvc-Timestamp``: when this attempt was signed, UTC epoch seconds (an integer);
- ``X-Tokensvc-Signature``: ``sha256=`` + hex(HMAC-SHA256(key, timestamp + "." + body)),
  ``key`` being the target's configured HMAC key (UTF-8) and ``body`` the exact bytes received;
- ``X-Tokensvc-Event-Id``: the push's ``event_id`` (also in the body), for idempotency.

A target recomputes the HMAC over the raw body, compares in constant time, and refuses a
timestamp more than :data:`TOLERANCE` seconds from its clock (a replayed old delivery). Each
retry is signed afresh, so a delivery that waited hours still carries a current timestamp.
The README's "Message push" section gives the same check as a 10-line verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import re

TIMESTAMP_HEADER = "X-Tokensvc-Timestamp"
SIGNATURE_HEADER = "X-Tokensvc-Signature"
EVENT_ID_HEADER = "X-Tokensvc-Event-Id"
TOLERANCE = 300
"""Seconds a signed timestamp may differ from the receiver's clock."""

_PREFIX = "sha256="
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
"""ASCII digits only: ``str.isdigit`` also takes ones ``int`` refuses (``"²"``)."""


def signature(key: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``key`` over ``b"<timestamp>." + body``."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return _PREFIX + mac.hexdigest()


def signed_headers(key: str, timestamp: int, body: bytes, event_id: str) -> dict[str, str]:
    """The headers of one delivery attempt (see the module docstring); ``timestamp`` in UTC
    epoch seconds."""
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(key, timestamp, body),
        EVENT_ID_HEADER: event_id,
    }


def verify(
    key: str,
    body: bytes,
    timestamp: str | None,
    signature_header: str | None,
    now: float,
    tolerance: float = TOLERANCE,
) -> bool:
    """True when ``signature_header`` is the HMAC of ``body`` at ``timestamp`` (the header
    values as received) and the timestamp is within ``tolerance`` seconds of ``now`` (UTC
    epoch seconds). Compares in constant time; never raises on malformed headers."""
    if not timestamp or not signature_header or not _TIMESTAMP_RE.fullmatch(timestamp):
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = signature(key, int(timestamp), body)
    return hmac.compare_digest(expected.encode(), signature_header.encode("utf-8", "replace"))
