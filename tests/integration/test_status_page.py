"""The status page in a real headless browser (Debian's chromium, driven by Playwright).

Skips only where chromium or playwright is missing; ``.ci/run`` installs both and sets
``TOKENSVC_REQUIRE_BROWSER=1`` so that a missing browser fails instead. Screenshots are saved
under ``test-artifacts/`` and their paths printed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_KEY, CLASSIC_APPID, CLIENT_KEY, SECRETS, STABLE_APPID
from tests.support.service import Start, ready, wait_until
from tokensvc.config import Settings
from tokensvc.wechat.fake import FakeWechat

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = shutil.which("chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        executable = None
    if executable is None:
        if os.environ.get("TOKENSVC_REQUIRE_BROWSER"):
            pytest.fail("chromium or playwright missing, but TOKENSVC_REQUIRE_BROWSER is set")
        pytest.skip("chromium (apt-get install chromium) or playwright (pip) not installed")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


async def open_status(browser: Any, client: TestClient[Any, Any]) -> Any:
    context = await browser.new_context(
        http_credentials={"username": "ops", "password": ADMIN_KEY},
        viewport={"width": 1400, "height": 900},
    )
    page = await context.new_page()
    response = await page.goto(str(client.make_url("/status")))
    assert response is not None and response.status == 200
    return page


async def row_text(page: Any, appid: str, field: str) -> str:
    return str(await page.locator(f'tr[data-appid="{appid}"] [data-field="{field}"]').inner_text())


async def test_status_page_in_a_real_browser(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start, browser: Any
) -> None:
    client = await ready(start_service, make_settings())
    page = await open_status(browser, client)
    for appid in (CLASSIC_APPID, STABLE_APPID):
        assert await page.locator(f'tr[data-appid="{appid}"]').count() == 1
        assert await row_text(page, appid, "state") == "fresh"

    countdown = page.locator(f'tr[data-appid="{CLASSIC_APPID}"] .countdown')
    first = await countdown.inner_text()
    assert first.endswith("s left")
    await page.wait_for_function(
        "([sel, before]) => document.querySelector(sel).textContent !== before",
        arg=[f'tr[data-appid="{CLASSIC_APPID}"] .countdown', first],
        timeout=5000,
    )

    before = await row_text(page, CLASSIC_APPID, "fingerprint")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click(f'button[data-action="rotate"][data-appid="{CLASSIC_APPID}"]')
    await page.wait_for_function(
        "([sel, before]) => document.querySelector(sel).textContent !== before",
        arg=[f'tr[data-appid="{CLASSIC_APPID}"] [data-field="fingerprint"]', before],
        timeout=10000,
    )
    after = await row_text(page, CLASSIC_APPID, "fingerprint")
    assert after != before and len(after) == 8
    assert "new token" in await page.locator("#flash").inner_text()
    await page.wait_for_selector("#events td:text('operator')", timeout=10000)

    dom = await page.content()
    for value in [*fake.tokens, *SECRETS.values(), ADMIN_KEY, CLIENT_KEY]:
        assert value not in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"\nstatus page screenshot: {shot}")

    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    await page.screenshot(path=str(ARTIFACTS / "status-page-phone.png"), full_page=True)


async def test_status_page_when_wechat_rejects_the_app_secret(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start, browser: Any
) -> None:
    fake.apps[STABLE_APPID] = "rotated-on-the-wechat-side"
    client = await start_service(make_settings())
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def misconfigured() -> bool:
        status = await (await client.get("/v1/status", headers=admin)).json()
        return any(a["state"] == "misconfigured" for a in status["apps"])

    await wait_until(misconfigured)
    page = await open_status(browser, client)
    assert await row_text(page, STABLE_APPID, "state") == "misconfigured"
    error = await row_text(page, STABLE_APPID, "last_error")
    assert error.startswith("40125: invalid appsecret")
    shot = ARTIFACTS / "status-page-wrong-secret.png"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(shot), full_page=True)
    print(f"\nwrong-secret screenshot: {shot}")
