"""Secrets and their hashes: the only place tokensvc hashes an AppSecret, a token or a key.

- :class:`Secret` holds an AppSecret and never shows it (``repr``, ``str``, logs, tracebacks).
- :func:`fingerprint`: the first 8 hex digits of a value's SHA-256, how an access_token, an
  AppSecret or a key appears in logs, pages, metrics and errors.
- :func:`key_sha256`: the full hex SHA-256 of a client or admin key, as ``key_sha256`` lines in
  the config hold it (``tokensvc keygen`` prints one); :func:`sha256_hex` the same for any value
  (a replaced access_token is remembered at rest only by it).
- :func:`matches_sha256`: whether a presented value hashes to a stored digest, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac


def sha256_hex(value: str | bytes) -> str:
    """The SHA-256 of ``value`` (``str`` is UTF-8 encoded) as 64 lowercase hex digits."""
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


def key_sha256(key: str) -> str:
    """Hex SHA-256 of a client or admin key, as written in ``key_sha256`` config lines."""
    return sha256_hex(key)


EMPTY_KEY_SHA256 = key_sha256("")
"""The SHA-256 of the empty string: a ``key_sha256`` with this value accepts an empty key."""


def fingerprint(value: str) -> str:
    """First 8 hex digits of the SHA-256 of ``value``: how tokens and secrets appear anywhere."""
    return sha256_hex(value)[:8]


def matches_sha256(value: str | bytes, digest: str) -> bool:
    """True when ``value`` hashes to ``digest`` (64 hex digits); compared in constant time."""
    return hmac.compare_digest(sha256_hex(value).encode(), digest.lower().encode())


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value; call only where it is sent to WeChat."""
        return self._value

    def fingerprint(self) -> str:
        """First 8 hex digits of the value's SHA-256: safe to log and show."""
        return fingerprint(self._value)

    def __repr__(self) -> str:
        return f"Secret(sha256:{self.fingerprint()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
