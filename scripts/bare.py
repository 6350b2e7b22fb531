"""The bare references the benchmarks compare tokensvc with: each a few lines of aiohttp.

- ``token``: ``GET /v1/apps/{appid}/token`` answering fixed bytes (the body tokensvc answered,
  read from ``--body-file``) with the same headers, after the same Bearer check (SHA-256 of the
  key compared in constant time with the configured hash).
- ``proxy``: ``POST /v1/apps/{appid}/messages/custom`` with the same Bearer check, forwarding
  the body to ``{--upstream}/cgi-bin/message/custom/send?access_token=`` over one pooled
  session, and answering the upstream's bytes.

No access log, no middleware. The event loop is uvloop when it is installed (as for
``tokensvc serve``). Prints ``listening`` once bound.

    .venv/bin/python scripts/bare.py token --port 9000 --key-sha256 HEX --body-file body.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac

import aiohttp
from aiohttp import web
from loadgen import loop_name


def token_app(key_sha256: str, body: bytes) -> web.Application:
    """The bare token handler."""
    expected = key_sha256.encode()

    async def token(request: web.Request) -> web.Response:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        digest = hashlib.sha256(key.strip().encode()).hexdigest().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, expected):
            raise web.HTTPUnauthorized()
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    app = web.Application()
    app.router.add_get("/v1/apps/{appid}/token", token)
    return app


def proxy_app(key_sha256: str, upstream: str, access_token: str) -> web.Application:
    """The bare forwarder (about 20 lines, as a business server might write one)."""
    expected = key_sha256.encode()
    session_key = web.AppKey("session", aiohttp.ClientSession)
    url = f"{upstream}/cgi-bin/message/custom/send"

    async def send(request: web.Request) -> web.Response:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        digest = hashlib.sha256(key.strip().encode()).hexdigest().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, expected):
            raise web.HTTPUnauthorized()
        async with request.app[session_key].post(
            url,
            params={"access_token": access_token},
            data=await request.read(),
            headers={"Content-Type": "application/json"},
        ) as upstream_answer:
            answer = await upstream_answer.read()
        return web.Response(body=answer, content_type="application/json")

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        async with aiohttp.ClientSession() as s:
            app[session_key] = s
            yield

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/apps/{appid}/messages/custom", send)
    return app


async def serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("listening", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["token", "proxy"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-sha256", required=True)
    parser.add_argument("--body-file", help="token: the bytes to answer")
    parser.add_argument("--upstream", help="proxy: the simulator's base URL")
    parser.add_argument("--access-token", help="proxy: the token to send upstream")
    args = parser.parse_args()
    loop_name()
    if args.kind == "token":
        with open(args.body_file, "rb") as f:
            app = token_app(args.key_sha256, f.read())
    else:
        app = proxy_app(args.key_sha256, args.upstream, args.access_token)
    asyncio.run(serve(app, args.port))


if __name__ == "__main__":
    main()
