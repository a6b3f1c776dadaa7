"""The web chat in headless Chromium (Playwright driving the system's `chromium`), against a real
uvicorn server on 127.0.0.1 with the real agent (SmolLM2, scoring mode) and SQLite sessions.

Skipped, with the reason, where Playwright or a Chromium binary is missing: `apt-get install
chromium` and `pip install playwright` (no `playwright install`; the system browser is used).
Set REASONREC_SCREENSHOT=docs/web-chat.png to also save the screenshot there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from helpers.servers import BackgroundServer

from reasonrec.agent.interfaces.server import create_app

K = 5


def chromium_binary() -> str | None:
    """REASONREC_CHROMIUM, else the first Chromium/Chrome on PATH."""
    explicit = os.environ.get("REASONREC_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


# Checked at collection, so a machine without a browser skips before the model and the index are built.
pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="playwright is not installed (pip install playwright)"
    ),
    pytest.mark.skipif(
        chromium_binary() is None,
        reason="no Chromium binary found (apt-get install chromium, or set REASONREC_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_binary(), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(ml100k, lm, indexed_store, retrieval_config, tmp_path_factory):
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.chat.store import SessionStore
    from reasonrec.agent.config import AgentConfig, RankerConfig

    agent = RecommenderAgent(
        AgentConfig(retrieval=retrieval_config, ranker=RankerConfig(mode="scoring")), dataset=ml100k, model=lm
    )
    store = SessionStore(tmp_path_factory.mktemp("web-sessions") / "sessions.sqlite3")
    with BackgroundServer(create_app(agent, store=store)) as srv:
        yield srv


def card_ids(bot_message) -> list[str]:
    return [c.get_attribute("data-item-id") for c in bot_message.locator(".card").all()]


def test_chat_thumbs_down_replaces_the_item(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")

    page.fill("#user-id", "196")  # a known ML-100K user: their history seeds the session
    page.fill("#text", "a funny comedy from the 90s")
    page.press("#text", "Enter")
    bots = page.locator("#messages .msg.bot")
    bots.first.locator(".card").nth(K - 1).wait_for(timeout=120_000)
    first = card_ids(bots.first)
    assert "user 196" in page.inner_text("#session-info")
    assert len(first) == K == len(set(first)) and all(first)
    card = bots.first.locator(f'.card[data-item-id="{first[0]}"]')
    assert card.locator(".title").inner_text() and card.locator(".reason").inner_text()
    assert card.locator(".genre").count() >= 1

    card.locator(".thumb-down").click()
    page.wait_for_function("document.querySelectorAll('#messages .msg.bot').length >= 2", timeout=120_000)
    second = card_ids(bots.nth(1))
    assert len(second) == K and first[0] not in second, (first, second)
    assert "disliked" in (card.get_attribute("class") or "")

    shot = tmp_path / "web-chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("REASONREC_SCREENSHOT"):
        shutil.copy(shot, os.environ["REASONREC_SCREENSHOT"])

    # The session id is in localStorage: a reload redraws the same conversation from the server.
    page.reload()
    page.locator("#messages .msg.bot").nth(1).locator(".card").nth(K - 1).wait_for(timeout=30_000)
    assert card_ids(page.locator("#messages .msg.bot").nth(1)) == second

    # An ambiguous title gets a clarifying question; its options are buttons that answer it.
    page.fill("#text", "more like Star Trek")
    page.press("#text", "Enter")
    option = bots.nth(2).locator('.options button[data-item-id="228"]')  # The Wrath of Khan (1982)
    option.wait_for(timeout=120_000)
    assert bots.nth(2).locator(".card").count() == 0
    option.click()
    bots.nth(3).locator(".card").first.wait_for(timeout=120_000)
    assert "Wrath of Khan" in bots.nth(3).locator(".reply").inner_text()
    assert not errors, errors
    page.close()
