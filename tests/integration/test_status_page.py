"""The status page in a real headless browser (Debian's chromium, driven by Playwright).

Skips only where chromium or playwright is missing; ``.ci/run`` installs both and sets
``TOKENSVC_REQUIRE_BROWSER=1`` so that a missing browser fails instead. Screenshots are saved
under ``$TOKENSVC_SCREENSHOTS`` (default ``test-artifacts/``) and their paths printed.
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

from tests.conftest import (
    ADMIN_KEY,
    AUTH,
    CLASSIC_APPID,
    CLIENT_KEY,
    SECRETS,
    STABLE_APPID,
    base_config,
)
from tests.support.service import Start, ready, wait_until
from tokensvc.config import Settings
from tokensvc.simulator import FakeWechat

SCREENSHOTS = Path(
    os.environ.get("TOKENSVC_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "test-artifacts"
)
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
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}

WRONG_SECRET_APPID = "wx00000000000000a3"  # stable; its AppSecret was reset on WeChat's side
FAILING_APPID = "wx00000000000000a4"  # classic; its refreshes fail, its token runs out
RETRYING_APPID = "wx00000000000000a5"  # classic; operators' refreshes fail, its token is fine


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


async def open_status(
    browser: Any, client: TestClient[Any, Any], size: tuple[int, int] = WIDTHS["desktop"]
) -> Any:
    """The page at ``size`` (width, height in CSS pixels); fails on any CSP violation."""
    context = await browser.new_context(
        http_credentials={"username": "ops", "password": ADMIN_KEY},
        viewport={"width": size[0], "height": size[1]},
    )
    page = await context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.violations = violations
    response = await page.goto(str(client.make_url("/status")))
    assert response is not None and response.status == 200
    return page


def app_selector(appid: str) -> str:
    return f'article[data-appid="{appid}"]'


async def field_text(page: Any, appid: str, field: str) -> str:
    locator = page.locator(f'{app_selector(appid)} [data-field="{field}"]')
    return str(await locator.inner_text())


MARKERS_JS = """
() => Object.fromEntries([...document.querySelectorAll("article.app")].map((card) => {
  const at = {};
  for (const marker of card.querySelectorAll("[data-marker]")) {
    const box = marker.getBoundingClientRect();
    at[marker.dataset.marker] = marker.dataset.marker === "overlap"
      ? [box.left, box.right] : box.left;
  }
  return [card.dataset.appid, {state: card.dataset.state, ...at}];
}))
"""

LAYOUT_JS = """
() => {
  const width = document.documentElement.clientWidth;
  const cut = [...document.querySelectorAll("button, input, select, time, .state, svg.bar")]
    .filter((el) => el.getBoundingClientRect().right > width + 0.5)
    .map((el) => el.outerHTML.slice(0, 80));
  const wrapped = [...document.querySelectorAll("time, .countdown")]
    .filter((el) => el.getClientRects().length > 1)
    .map((el) => el.textContent);
  return {scrollWidth: document.documentElement.scrollWidth, clientWidth: width, cut, wrapped};
}
"""


async def test_the_page_draws_each_app_lifetime_at_desktop_and_phone_width(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start, browser: Any
) -> None:
    extra = [
        {
            "appid": appid,
            "name": name,
            "kind": kind,
            "token_api": api,
            "secret_env": "CLASSIC_SECRET",
        }
        for appid, name, kind, api in (
            (WRONG_SECRET_APPID, "Mall mini program", "miniprogram", "stable"),
            (FAILING_APPID, "Support account", "official_account", "classic"),
            (RETRYING_APPID, "News account", "official_account", "classic"),
        )
    ]
    fake.add_app(WRONG_SECRET_APPID, "reset-on-wechat")
    fake.add_app(FAILING_APPID, SECRETS[CLASSIC_APPID])
    fake.add_app(RETRYING_APPID, SECRETS[CLASSIC_APPID])
    fake.rotation_window = 20  # long enough to still see the overlap on the page
    settings = make_settings(
        apps=base_config("", "")["apps"] + extra, wechat={"rotation_window": 20}
    )
    client = await ready(start_service, settings)
    rotate = "/v1/apps/{}/token/rotate"
    assert (await client.post(rotate.format(CLASSIC_APPID), headers=ADMIN)).status == 200
    fake.inject("/cgi-bin/token", "busy", times=None)  # classic refreshes fail from now on
    for _ in range(3):
        assert (await client.post(rotate.format(RETRYING_APPID), headers=ADMIN)).status == 503
    # WeChat kills the failing app's token; a caller reports it, and its replacement fails
    token = await client.get(f"/v1/apps/{FAILING_APPID}/token", headers=AUTH)
    fake.revoke(FAILING_APPID)
    report = {"stale_token": (await token.json())["access_token"]}
    refresh = f"/v1/apps/{FAILING_APPID}/token/refresh"
    assert (await client.post(refresh, json=report, headers=AUTH)).status == 503

    async def apps() -> dict[str, dict[str, Any]]:
        document = await (await client.get("/v1/status", headers=ADMIN)).json()
        return {a["appid"]: a for a in document["apps"]}

    async def settled() -> bool:
        now = await apps()
        return bool(
            now[FAILING_APPID]["failures"] >= 4  # the scheduler keeps retrying, backing off
            and now[WRONG_SECRET_APPID]["state"] == "misconfigured"
        )

    await wait_until(settled)
    now = await apps()
    assert now[FAILING_APPID]["state"] == "expired"
    assert now[RETRYING_APPID]["state"] == "retrying"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in WIDTHS.items():
        page = await open_status(browser, client, size)
        layout = await page.evaluate(LAYOUT_JS)
        assert layout["scrollWidth"] <= layout["clientWidth"], (label, layout)
        assert layout["cut"] == [] and layout["wrapped"] == [], (label, layout)

        order = [
            await card.get_attribute("data-appid")
            for card in await page.query_selector_all("article.app")
        ]
        assert order[:3] == [FAILING_APPID, WRONG_SECRET_APPID, RETRYING_APPID]  # failing first

        bars = await page.evaluate(MARKERS_JS)
        for appid in (CLASSIC_APPID, STABLE_APPID, RETRYING_APPID):
            bar = bars[appid]
            assert bar["fetched"] < bar["refresh"] < bar["expiry"], (label, appid, bar)
            assert bar["fetched"] <= bar["now"] <= bar["expiry"], (label, appid, bar)
        overlap = bars[CLASSIC_APPID]["overlap"]  # the replaced token's last seconds
        assert overlap[0] == pytest.approx(bars[CLASSIC_APPID]["fetched"], abs=1)
        assert bars[CLASSIC_APPID]["fetched"] < overlap[1] < bars[CLASSIC_APPID]["expiry"]
        failing = bars[FAILING_APPID]  # rejected by WeChat, the next retry still to come
        assert failing["fetched"] < failing["refresh"] < failing["expiry"], (label, failing)
        assert failing["fetched"] <= failing["now"] <= failing["next"] + 1, (label, failing)
        assert failing["fetched"] <= failing["rejected"] <= failing["now"], (label, failing)
        wrong = bars[WRONG_SECRET_APPID]  # no token: only now and the next attempt
        assert "fetched" not in wrong and "expiry" not in wrong
        assert wrong["now"] < wrong["next"]

        assert await field_text(page, WRONG_SECRET_APPID, "next_refresh_reason") == (
            "configuration error: retried only every config_error_retry"
        )
        assert (await field_text(page, FAILING_APPID, "next_refresh_reason")).startswith(
            "retry after"
        )
        assert await page.locator(f"{app_selector(WRONG_SECRET_APPID)} button").count() == 1
        assert await page.locator(f"{app_selector(STABLE_APPID)} button").count() == 2

        # a flood of identical errors is one line
        flood = page.locator(f'#events li[data-appid="{FAILING_APPID}"][data-outcome="error"]')
        assert int(await flood.first.get_attribute("data-count")) >= 2
        assert "×" in await flood.first.inner_text()

        assert page.violations == []
        shot = SCREENSHOTS / f"status-{size[0]}.png"
        await page.screenshot(path=str(shot), full_page=True)
        print(f"\nstatus page at {size[0]} px: {shot}")
        await page.context.close()
    fake.clear_faults()


async def test_status_page_acts_and_updates_itself(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start, browser: Any
) -> None:
    client = await ready(start_service, make_settings())
    page = await open_status(browser, client)
    for appid in (CLASSIC_APPID, STABLE_APPID):
        assert await page.locator(app_selector(appid)).count() == 1
        assert await field_text(page, appid, "state") == "fresh"

    countdown = page.locator(f'{app_selector(CLASSIC_APPID)} .countdown[data-format="left"]')
    first = await countdown.inner_text()
    assert first.endswith(" left")
    await page.wait_for_function(
        "([sel, before]) => document.querySelector(sel).textContent !== before",
        arg=[f'{app_selector(CLASSIC_APPID)} .countdown[data-format="left"]', first],
        timeout=5000,
    )

    before = await field_text(page, CLASSIC_APPID, "fingerprint")
    asked: list[str] = []

    accepting: list[asyncio.Future[None]] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        accepting.append(asyncio.ensure_future(dialog.accept()))

    page.on("dialog", answer)
    await page.click(f'button[data-action="rotate"][data-appid="{CLASSIC_APPID}"]')
    await page.wait_for_function(
        "([sel, before]) => document.querySelector(sel).textContent !== before",
        arg=[f'{app_selector(CLASSIC_APPID)} [data-field="fingerprint"]', before],
        timeout=10000,
    )
    # the configured rotation window (5 s in the tests), not WeChat's usual 5 minutes
    assert "stays valid for 5 seconds (rotation_window)" in asked[0]
    after = await field_text(page, CLASSIC_APPID, "fingerprint")
    assert after != before and len(after) == 8
    assert "new token" in await page.locator("#flash").inner_text()
    await page.wait_for_selector(f'#events li[data-appid="{CLASSIC_APPID}"]:has-text("operator")')

    dom = await page.content()
    for value in [*fake.tokens, *SECRETS.values(), ADMIN_KEY, CLIENT_KEY]:
        assert value not in dom
    assert page.violations == []


async def test_the_search_box_and_the_event_filters_work_without_javascript(
    make_settings: Callable[..., Settings], start_service: Start, browser: Any
) -> None:
    client = await ready(start_service, make_settings())
    context = await browser.new_context(
        http_credentials={"username": "ops", "password": ADMIN_KEY}, java_script_enabled=False
    )
    page = await context.new_page()
    await page.goto(str(client.make_url("/status")))
    await page.fill('input[name="q"]', "stable mp")
    await page.click('form.search button[type="submit"]')
    assert [
        await a.get_attribute("data-appid") for a in await page.query_selector_all("article.app")
    ] == [STABLE_APPID]
    await page.fill('input[name="app"]', CLASSIC_APPID)
    await page.select_option('select[name="outcome"]', "success")
    await page.click('form.filters button[type="submit"]')
    assert "q=stable+mp" in page.url and f"app={CLASSIC_APPID}" in page.url
    events = await page.query_selector_all("#events li.event")
    assert events
    for event in events:
        assert await event.get_attribute("data-appid") == CLASSIC_APPID
        assert await event.get_attribute("data-outcome") == "success"
    await context.close()
