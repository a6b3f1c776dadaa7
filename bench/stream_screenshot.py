"""Screenshot of the web chat while an answer streams (cards shown, reasons being written).

    .venv/bin/python bench/stream_screenshot.py                 # -> docs/web-chat-streaming.png
    .venv/bin/python bench/stream_screenshot.py --final --out docs/web-chat.png   # the finished answer

Starts `reasonrec serve` (default mode: hybrid, so reasons are generated) on 127.0.0.1, opens the page in
headless Chromium (Playwright driving the system's `chromium`, as tests/test_web.py does), starts a chat
for ML-100K user 196, sends one message and takes the screenshot once the provisional cards are on the
page and the first reason has started to stream (with `--final`: once the final answer, reasons checked
and decided, is on the page); then waits for the final answer and prints the times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/_server.py

OUT = Path(__file__).resolve().parents[1] / "docs" / "web-chat-streaming.png"


def main() -> None:
    from _server import ServerProcess
    from playwright.sync_api import sync_playwright

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--message", default="a funny sci-fi")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--final", action="store_true", help="Screenshot the finished answer, not the streaming one.")
    a = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--threads", str(a.threads), "--sessions", str(Path(tmp) / "s.sqlite3")]
        with ServerProcess(args, startup_timeout_s=900) as srv, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(srv.url)
            page.fill("#user-id", "196")
            page.click("#new-chat")
            page.wait_for_selector("#session-info:has-text('user 196')", timeout=60_000)
            page.fill("#text", a.message)
            t0 = time.perf_counter()
            page.click("#send")
            page.wait_for_selector(".card.streaming", timeout=600_000)
            t_cards = time.perf_counter() - t0
            if not a.final:
                page.wait_for_function(
                    "[...document.querySelectorAll('.card.streaming .reason')].some(r => r.textContent.length > 12)",
                    timeout=600_000,
                )
                a.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(a.out), full_page=False)
            page.wait_for_selector(".msg.bot:not(.pending) .card", timeout=600_000)
            t_done = time.perf_counter() - t0
            if a.final:
                a.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(a.out), full_page=True)
            browser.close()
    print(f"first cards after {t_cards:.1f} s, complete after {t_done:.1f} s; screenshot {a.out}")


if __name__ == "__main__":
    main()
