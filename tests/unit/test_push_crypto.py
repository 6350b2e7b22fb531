"""WeChat's push signatures and safe-mode decryption, against published sample values.

Sources of the sample values:

- Plaintext signature: WeChat's 消息加解密说明, 接入指引 (明文模式): Token ``AAAAA``, timestamp
  ``1714037059``, nonce ``486452656`` give ``899cf89e464efb63f54ddac96b0a0a235f53aa78``
  (https://developers.weixin.qq.com/doc/oplatform/developers/dev/push/encryption.md).
- Safe mode: the sample values of wechatpy's tests (``wechatpy/tests/test_crypto.py``: Token
  ``123456``, EncodingAESKey ``kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR``, appid
  ``wx49f0ab532d5d035a``; an encrypted text message with its msg_signature, and an encrypted
  ``echostr``), the same scheme as the official accounts' (WXBizMsgCrypt).
"""

from __future__ import annotations

import base64
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tokensvc.push.crypto import (
    PushCipher,
    PushCryptoError,
    aes_key,
    sha1_signature,
    signature_matches,
)
from tokensvc.simulator.push import encrypt_message, make_encoding_aes_key

SAMPLE_TOKEN = "123456"
SAMPLE_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
SAMPLE_APPID = "wx49f0ab532d5d035a"
SAMPLE_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTy"
    "eDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYy"
    "olBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWO"
    "MZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7ml"
    "sl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
)
SAMPLE_MSG_SIGNATURE = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
SAMPLE_TIMESTAMP = "1411525903"
SAMPLE_NONCE = "461056294"


def test_plaintext_signature_matches_wechats_worked_example() -> None:
    assert (
        sha1_signature("AAAAA", "1714037059", "486452656")
        == "899cf89e464efb63f54ddac96b0a0a235f53aa78"
    )
    assert signature_matches(
        "899cf89e464efb63f54ddac96b0a0a235f53aa78", "AAAAA", "1714037059", "486452656"
    )
    assert not signature_matches(
        "899cf89e464efb63f54ddac96b0a0a235f53aa78", "AAAAB", "1714037059", "486452656"
    )
    assert not signature_matches("not-hex-\u00e9", "AAAAA", "1714037059", "486452656")


def test_sample_msg_signature_covers_the_encrypt_field() -> None:
    args = (SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE)
    assert signature_matches(SAMPLE_MSG_SIGNATURE, *args, SAMPLE_ENCRYPT)
    assert not signature_matches(SAMPLE_MSG_SIGNATURE, *args, SAMPLE_ENCRYPT[:-4] + "AAA=")


def test_sample_message_decrypts_to_its_xml() -> None:
    message = PushCipher(SAMPLE_KEY, SAMPLE_APPID).decrypt(SAMPLE_ENCRYPT)
    assert message.startswith(b"<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>")
    assert b"<FromUserName><![CDATA[messense]]></FromUserName>" in message
    assert b"<Content><![CDATA[test]]></Content>" in message
    assert message.endswith(b"</xml>")


def test_sample_echostr_decrypts_and_its_signature_holds() -> None:
    echostr = (
        "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
    )
    assert signature_matches(
        "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", SAMPLE_TOKEN, "1411443780", "437374425", echostr
    )
    assert PushCipher(SAMPLE_KEY, SAMPLE_APPID).decrypt(echostr) == b"5927782489442352469"


def test_the_same_ciphertext_for_another_app_is_refused() -> None:
    with pytest.raises(PushCryptoError) as info:
        PushCipher(SAMPLE_KEY, "wx0000000000000000").decrypt(SAMPLE_ENCRYPT)
    assert info.value.reason == "wrong_appid"
    assert SAMPLE_KEY not in str(info.value)


@pytest.mark.parametrize("length", [0, 1, 11, 12, 43, 44, 76, 100, 1000])
def test_round_trip_with_the_simulators_independent_encryption(length: int) -> None:
    """Lengths around the 32-byte block boundaries (20 bytes of header + 18 of appid)."""
    key = make_encoding_aes_key()
    message = os.urandom(length)
    encrypted = encrypt_message(message, key, SAMPLE_APPID)
    assert len(base64.b64decode(encrypted)) % 32 == 0
    assert PushCipher(key, SAMPLE_APPID).decrypt(encrypted) == message


def _raw_encrypt(key: str, plain: bytes) -> str:
    raw = aes_key(key)
    encryptor = Cipher(algorithms.AES(raw), modes.CBC(raw[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


@pytest.mark.parametrize(
    "tail",
    [
        bytes([0]) * 32,  # pad byte 0
        bytes([33]) * 32,  # pad longer than a WeChat block
        bytes(31) + bytes([5]),  # pad byte 5, but the 4 before it are not 5
    ],
)
def test_bad_padding_is_refused(tail: bytes) -> None:
    body = os.urandom(16) + struct.pack(">I", 4) + b"ping" + SAMPLE_APPID.encode()
    body += bytes([32 - len(body) % 32]) * (32 - len(body) % 32)
    with pytest.raises(PushCryptoError) as info:
        PushCipher(SAMPLE_KEY, SAMPLE_APPID).decrypt(_raw_encrypt(SAMPLE_KEY, body + tail))
    assert info.value.reason == "bad_ciphertext"
    assert "padding" in str(info.value)


def test_a_length_field_past_the_end_is_refused() -> None:
    plain = os.urandom(16) + struct.pack(">I", 1000) + b"short" + SAMPLE_APPID.encode()
    plain += bytes([32 - len(plain) % 32]) * (32 - len(plain) % 32)
    with pytest.raises(PushCryptoError, match="length") as info:
        PushCipher(SAMPLE_KEY, SAMPLE_APPID).decrypt(_raw_encrypt(SAMPLE_KEY, plain))
    assert info.value.reason == "bad_ciphertext"


def test_another_apps_key_does_not_open_it() -> None:
    encrypted = encrypt_message(b"<xml/>", make_encoding_aes_key(), SAMPLE_APPID, bytes(16))
    with pytest.raises(PushCryptoError):
        PushCipher(SAMPLE_KEY, SAMPLE_APPID).decrypt(encrypted)


@pytest.mark.parametrize(
    "encrypted", ["", "not base64!", base64.b64encode(b"x" * 15).decode(), "QUJD\u00e9"]
)
def test_garbage_is_refused_without_raising_anything_else(encrypted: str) -> None:
    with pytest.raises(PushCryptoError) as info:
        PushCipher(SAMPLE_KEY, SAMPLE_APPID).decrypt(encrypted)
    assert info.value.reason == "bad_ciphertext"


def test_aes_key_is_the_base64_of_the_encoding_aes_key() -> None:
    assert len(aes_key(SAMPLE_KEY)) == 32
    with pytest.raises(ValueError, match="43"):
        aes_key("short")
