"""WeChat message push (消息推送), centralised.

- Receiving: :mod:`tokensvc.push.crypto` (signatures, safe-mode AES) and
  :mod:`tokensvc.push.receive` (check, decrypt, parse, dedupe key); the routes are in
  :mod:`tokensvc.web.push`.
- Delivering: :mod:`tokensvc.push.outbox` (accepted pushes, stored before WeChat is answered),
  :mod:`tokensvc.push.delivery` (signed POSTs to the forward targets, retried),
  :mod:`tokensvc.push.signing` (the HMAC scheme targets verify).
- :mod:`tokensvc.push.grants`: the subscribe-grant ledger the push events feed.
"""
