"""The web page at ``/`` in a real headless Chromium (Debian's package, driven by Playwright): upload a video, pick a
method and a keep ratio, ask, see the streamed answer, its stats and the kept-token map.

``LONGVID_SCREENSHOT=docs/serve.png pytest tests/test_serve_browser.py`` also saves the page (docs/serve.png).

    pytest tests/test_serve_browser.py -q
"""

from __future__ import annotations

import os
import shutil

import pytest

from serving import running_server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 60 s synthetic video longvid-tiny was trained on, and its colour question (so the answer is a letter)."""
    from longvid.synth import eval_seed, make_questions, make_video_spec, write_video

    from longvid.eval.synth import model_suite, tiny_model_path

    spec = make_video_spec(eval_seed(3), seconds=60, version=model_suite(tiny_model_path()))  # the suite it knows
    path = write_video(spec, tmp_path_factory.mktemp("page") / "events.mp4")
    question = next(q for q in make_questions(spec) if q.kind == "color")
    return path, question


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's package)")
def test_upload_ask_and_see_the_answer_stats_and_map(synthetic, tmp_path):
    video, question = synthetic
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(video, media / "events.mp4")
    with running_server("--model", "longvid-tiny", "--media-dir", media) as server, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(server.url)
        page.wait_for_selector("#method option[value='evs']", state="attached")
        assert page.locator("#video option").all_inner_texts() == ["events.mp4"]  # the media directory
        page.set_input_files("#upload", str(video))
        page.wait_for_function("document.querySelector('#video').value.startsWith('file-')")
        page.select_option("#method", "evs")
        page.eval_on_selector("#keep", "el => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }")
        assert page.inner_text("#keepValue") == "0.5"
        page.fill("#question", question.text)
        page.click("#ask")
        page.wait_for_function("document.querySelector('.turn .stats').textContent.length > 0", timeout=60_000)
        page.wait_for_function("document.querySelector('#map').naturalWidth > 0", timeout=60_000)
        answer = page.inner_text(".turn .a")
        stats = page.inner_text(".turn .stats")
        assert answer.strip() == question.answer  # longvid-tiny reads its own synthetic videos
        assert stats.startswith("evs: retention 0.50") and "visual tokens" in stats
        assert page.inner_text("#status") == ""
        if os.environ.get("LONGVID_SCREENSHOT"):
            page.screenshot(path=os.environ["LONGVID_SCREENSHOT"], full_page=True)
        page.select_option("#method", "fastv")  # a bad ratio shows the server's one line, not a broken page
        page.eval_on_selector("#keep", "el => { el.value = '1'; el.dispatchEvent(new Event('input')); }")
        page.fill("#fps", "0")
        page.click("#ask")
        page.wait_for_function("document.querySelectorAll('.turn').length == 2 && "
                               "document.querySelectorAll('.turn .a')[1].textContent.length > 0")
        assert '"fps": 0' in page.inner_text("#status")
        browser.close()
