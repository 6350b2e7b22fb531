"""WeChat's message-push signatures and safe-mode decryption (消息加解密).

- :func:`sha1_signature`: ``sha1(join(sort([Token, timestamp, nonce(, Encrypt)])))`` as 40
  hex digits: the ``signature`` of every push and of the URL check, and the ``msg_signature``
  of an encrypted push (with its ``Encrypt`` field). :func:`signature_matches` checks one in
  constant time.
- :class:`PushCipher`: decrypts an ``Encrypt`` field. ``AESKey = base64decode(EncodingAESKey +
  "=")`` (32 bytes), AES-256-CBC with IV = ``AESKey[:16]``, PKCS#7 padding to 32-byte blocks;
  the plaintext is ``random(16) + msg_len (4 bytes, network order) + msg + appid``, refused when
  the trailing appid is not the app's. AES is ``cryptography``'s.

Pages: https://developers.weixin.qq.com/doc/oplatform/developers/dev/push/encryption.md
(技术方案), https://developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.md
(docs/wechat.md#message-push).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_BYTES = 32
"""WeChat pads the plaintext with PKCS#7 to a multiple of 32 bytes (not AES's 16)."""

_RANDOM_BYTES = 16
_LENGTH_BYTES = 4


class PushCryptoError(ValueError):
    """An ``Encrypt`` field that cannot be opened. ``reason``: ``bad_ciphertext`` (not
    base64, not whole AES blocks, bad padding, impossible length) or ``wrong_appid`` (it
    decrypts, but names another app). The message names no key and no plaintext."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def sha1_signature(token: str, *values: str) -> str:
    """WeChat's push signature: SHA-1 (40 lowercase hex digits) of ``token`` and ``values``
    (timestamp, nonce and, for ``msg_signature``, the ``Encrypt`` field) sorted as strings and
    joined without separator."""
    joined = "".join(sorted((token, *values))).encode()
    return hashlib.sha1(joined).hexdigest()  # noqa: S324 (WeChat specifies SHA-1)


def signature_matches(given: str, token: str, *values: str) -> bool:
    """True when ``given`` (a query value as received) is :func:`sha1_signature` of ``token``
    and ``values``; compared in constant time, case-insensitively (WeChat sends lowercase)."""
    expected = sha1_signature(token, *values)
    return hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "replace"))


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of a 43-character EncodingAESKey: ``base64decode(key + "=")``.
    Raises ValueError when it is not one (the config loader has checked it already)."""
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("the EncodingAESKey is not 43 base64 characters") from None
    if len(key) != 32:
        raise ValueError("the EncodingAESKey is not 43 base64 characters")
    return key


class PushCipher:
    """Opens the ``Encrypt`` field of one app's safe-mode pushes (see the module docstring)."""

    def __init__(self, encoding_aes_key: str, appid: str) -> None:
        self._key = aes_key(encoding_aes_key)
        self._appid = appid.encode()

    def decrypt(self, encrypted: str) -> bytes:
        """The message (XML or JSON bytes) inside ``encrypted`` (the base64 ``Encrypt`` field).

        Raises :class:`PushCryptoError` for anything but a well-formed ciphertext of this
        app: not base64, not whole blocks, PKCS#7 padding wrong (the usual sign of a wrong
        EncodingAESKey), a length field past the end, or a trailing appid not this app's.
        """
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise PushCryptoError("bad_ciphertext", "Encrypt is not base64") from None
        if not data or len(data) % 16:
            raise PushCryptoError("bad_ciphertext", "Encrypt is not a whole number of AES blocks")
        decryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16])).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK_BYTES or plain[-pad:] != bytes([pad]) * pad:
            raise PushCryptoError(
                "bad_ciphertext",
                "Encrypt does not decrypt with this app's EncodingAESKey (bad padding)",
            )
        plain = plain[:-pad]
        header = _RANDOM_BYTES + _LENGTH_BYTES
        if len(plain) < header:
            raise PushCryptoError("bad_ciphertext", "Encrypt is too short to hold a message")
        (length,) = struct.unpack("!I", plain[_RANDOM_BYTES:header])
        if length > len(plain) - header:
            raise PushCryptoError("bad_ciphertext", "Encrypt's message length is past its end")
        message, sender = plain[header : header + length], plain[header + length :]
        if sender != self._appid:
            raise PushCryptoError(
                "wrong_appid", "Encrypt was made for another app (its trailing appid differs)"
            )
        return message
