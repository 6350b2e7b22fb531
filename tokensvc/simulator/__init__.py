"""The WeChat simulator (``tokensvc demo``, ``tokensvc fake-wechat`` and the tests).

It depends on nothing of the service but the clock and logging: a WeChat stand-in must not share
code paths with what it checks. :mod:`tokensvc.simulator.server` holds the server.
"""

from tokensvc.simulator.server import (
    FAKE_QR_CODE,
    REFUSING_OPENID,
    FakeWechat,
    IssuedToken,
    ReceivedCall,
    serve_fake,
)

__all__ = [
    "FAKE_QR_CODE",
    "REFUSING_OPENID",
    "FakeWechat",
    "IssuedToken",
    "ReceivedCall",
    "serve_fake",
]
