"""The "Write With Transformer" page in a real browser: Debian's chromium, driven headless by
Playwright (its own browser download is not used: executable_path points at the system one)."""

import re
import shutil

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'minigpt2[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'minigpt2[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page test needs Playwright: pip install playwright")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium binary (Debian: apt-get install chromium)", allow_module_level=True)

from minigpt2 import GPT2LMHeadModel, GPT2Tokenizer  # noqa: E402
from serve_helpers import MODEL_FOLDER, running_server  # noqa: E402


def test_tab_streams_a_continuation_and_hover_shows_the_alternatives(tmp_path):
    model, tok = GPT2LMHeadModel.from_pretrained(MODEL_FOLDER), GPT2Tokenizer.from_pretrained(MODEL_FOLDER)
    with running_server(model, tok) as (url, _), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model-name').textContent === 'tiny-shakespeare'")
            editor = page.locator("#editor")
            editor.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("JULIET:\nO Romeo, Romeo!")
            page.fill("#length", "30")              # a range input: fill sets its value
            editor.press("Tab")
            # text streams in: several pieces appear while the request is still running
            page.wait_for_function("document.querySelectorAll('#editor .tok').length >= 3")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')",
                                   timeout=60_000)
            tokens = page.locator("#editor .tok")
            assert tokens.count() >= 10
            text = editor.text_content()
            assert text.startswith("JULIET:\nO Romeo, Romeo!") and len(text) > len("JULIET:\nO Romeo, Romeo!") + 10
            # every piece is shaded by its probability
            shades = {tokens.nth(i).get_attribute("style") for i in range(tokens.count())}
            assert all(s and s.startswith("background") for s in shades) and len(shades) > 3
            # hover a generated piece that has a letter in it (a newline piece has no box to hover)
            tokens.filter(has_text=re.compile(r"[A-Za-z]")).nth(1).hover()
            tooltip = page.locator("#tooltip")
            tooltip.wait_for(state="visible")
            assert tooltip.locator("tr").count() == 5              # the top-5 alternatives
            assert "%" in tooltip.text_content()
            shot = tmp_path / "write_with_transformer.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")
        finally:
            browser.close()
