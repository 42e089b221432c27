"""The upload page in Debian's headless chromium, against uvicorn in a thread on 127.0.0.1."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterator

import pytest
import tiny_models
from asgi_server import running
from conftest import chromium_path

from benchmarks.web import CHROMIUM_ARGS
from edge_infer import Classifier
from edge_infer.serve import create_app

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

WAIT_MS = 15_000


@pytest.fixture(scope="module")
def server(colour_model) -> Iterator[str]:
    with running(create_app(Classifier.load(colour_model, threads=1))) as url:
        yield url + "/"


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console_errors() -> list[str]:
    """What the page logged as errors; a Content-Security-Policy violation shows up here."""
    return []


@pytest.fixture
def page(browser, server, console_errors):
    context = browser.new_context(viewport={"width": 960, "height": 640})
    page = context.new_page()
    errors = console_errors
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    sync_api.expect(page.locator("#model")).to_contain_text("3 labels", timeout=WAIT_MS)
    yield page
    context.close()


def test_pick_a_file_and_see_the_label(page, console_errors, colour_images, tmp_path):
    page.set_input_files("#file", str(colour_images["red"]))
    sync_api.expect(page.locator("#label")).to_have_text("red", timeout=WAIT_MS)
    sync_api.expect(page.locator("#topk li")).to_have_count(3)
    sync_api.expect(page.locator("#topk li").first).to_contain_text("100.0%")
    widths = page.locator("#topk .fill").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().width / e.parentElement.getBoundingClientRect().width)")
    assert widths[0] == pytest.approx(1.0, abs=0.01) and widths[1] < 0.01  # the bars are drawn
    sync_api.expect(page.locator("#timing")).to_contain_text("ms on the server")
    assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth") == 40
    shot = tmp_path / "serve-page.png"  # kept by pytest under its basetemp, for a look
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert console_errors == []


def test_drop_a_file_on_the_drop_zone(page, console_errors, colour_images):
    data = base64.b64encode(colour_images["blue"].read_bytes()).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "blue.jpg", { type: "image/jpeg" }));
            return dt;
        }""", data)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    sync_api.expect(page.locator("#label")).to_have_text("blue", timeout=WAIT_MS)
    sync_api.expect(page.locator("#filename")).to_have_text("blue.jpg")
    assert console_errors == []


def test_a_bad_file_shows_the_servers_error(page, console_errors, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.set_input_files("#file", str(notes))
    alert = page.get_by_role("alert")
    sync_api.expect(alert).to_be_visible(timeout=WAIT_MS)
    sync_api.expect(alert).to_contain_text("notes.txt: not an image format")
    sync_api.expect(page.locator("#result")).to_be_hidden()
    # chromium logs the 415 itself as a failed resource load; nothing else may appear
    assert [e for e in console_errors if "status of 415" not in e] == []


def test_the_file_input_is_reachable_by_keyboard_and_labelled(page):
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"
    name = page.locator("#file").evaluate("el => el.labels[0].textContent")
    assert "Choose an image" in name
    outline = page.locator("#drop").evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline == "solid"  # the focus ring is drawn on the drop zone
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") != "file"  # no keyboard trap
