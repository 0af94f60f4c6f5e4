"""clip serve's page in a real browser: Debian's headless Chromium (through Playwright's Python API)
loads the page, types a query, and sees the result thumbnails; a screenshot stays in tmp_path."""

import os

import pytest

pytest.importorskip("fastapi")

from serve_helpers import running

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_page_shows_thumbnails_for_a_typed_query(tmp_path, shapes_dir, encoder):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium for this test)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from clip.serve.app import Searcher, create_app
    from clip.tasks.embed import embed_to_dir
    from clip.tasks.search import EmbeddingIndex

    embed_to_dir(encoder, shapes_dir, tmp_path / "shapes.emb")
    searcher = Searcher(EmbeddingIndex.load(tmp_path / "shapes.emb"), encoder, name="shapes")
    with running(create_app(searcher)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.fill("#query", "a red circle")
            page.fill("#k", "3")
            page.click("#go")
            page.wait_for_selector("figure.result img", timeout=30_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('figure.result img')].every(i => i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
            figures = page.query_selector_all("figure.result")
            captions = [f.query_selector("figcaption").inner_text() for f in figures]
            links = [f.query_selector("a").get_attribute("href") for f in figures]
            widths = page.eval_on_selector_all("figure.result img", "imgs => imgs.map(i => i.naturalWidth)")
            page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
        finally:
            browser.close()
    assert len(figures) == 3 and "red_circle.png" in captions[0]  # best hit first, with its score
    assert all(w == 48 for w in widths)  # the thumbnails are the 48-pixel test images, decoded by the browser
    assert all(link.startswith(url + "/image/") for link in links)
    assert float(captions[0].split()[0]) > float(captions[-1].split()[0])
    assert os.path.getsize(tmp_path / "results.png") > 0
