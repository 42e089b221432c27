"""The cleaning page in Debian's headless chromium, against a real server thread on 127.0.0.1.

Relabel with the keyboard, delete with the keyboard and with the mouse, apply, then check the
files on disk and the journal; `--undo` must then give back every byte. Set CLEAN_SCREENSHOTS
to a folder to keep the screenshots (tests/README-style review of how the page looks).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import chromium_path
from test_clean_fixtures import serving, snapshot

from train.clean import Journal
from train.clean.cli import clean

pytestmark = [pytest.mark.browser, pytest.mark.torch]
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
WAIT_MS = 15_000


def _add_duplicate(r) -> None:
    shutil.copyfile(r.data / "cat" / "cat0.png", r.data / "dog" / "copy-of-cat0.png")


@pytest.fixture
def served(tmp_path):
    with serving(tmp_path, prepare=_add_duplicate) as (r, srv):
        yield r, srv


@pytest.fixture
def page(served):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.errors = []  # console errors: a Content-Security-Policy violation shows up here
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(served[1].url)
        page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
        yield page
        browser.close()


def shot(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("CLEAN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def card(page, path: str):
    return page.locator(f".card[data-path='{path}']")


def test_relabel_and_delete_on_the_page_then_undo(served, page, tmp_path):
    r, srv = served
    expect = sync_api.expect
    before = snapshot(r.data)
    cards = page.locator("#view .card")
    expect(cards).to_have_count(len(r.ranked) + 1)  # the copy has no loss: listed last
    expect(cards.first).to_have_attribute("data-path", r.ranked[0])
    expect(cards.first).to_have_class("card cursor")
    first = card(page, r.ranked[0])
    predicted = first.locator(".tag.pred").inner_text()
    expect(first.locator(".tag.given")).to_have_text(r.labels[r.ranked[0]])
    expect(first.locator(".conf")).to_have_text("90%")
    shot(page, "clean-ranked.png", tmp_path)

    page.keyboard.press("r")  # relabel to the predicted class; the cursor moves on
    page.keyboard.press("d")  # delete the second
    expect(first.locator(".badge")).to_have_text(f"→ {predicted}")
    expect(card(page, r.ranked[1]).locator(".badge")).to_have_text("delete")
    expect(card(page, r.ranked[2])).to_have_class("card cursor")
    third = card(page, r.ranked[2])
    other = next(lab for lab in ("bird", "cat", "dog") if lab != r.labels[r.ranked[2]])
    third.locator("select").select_option(other)  # the mouse way
    expect(third.locator(".badge")).to_have_text(f"→ {other}")
    page.keyboard.press("Space")  # ...and changed our mind: keep the third after all
    expect(third.locator(".badge")).to_have_text("")
    expect(page.locator("#pending")).to_have_text("2 changes: 1 relabel, 1 delete")
    shot(page, "clean-decided.png", tmp_path)

    page.click("#apply")
    expect(page.locator("#message")).to_contain_text("Applied: 1 relabelled, 1 moved", timeout=WAIT_MS)
    relabelled = f"{predicted}/{Path(r.ranked[0]).name}"
    assert (r.data / relabelled).read_bytes() and not (r.data / r.ranked[0]).exists()
    assert (r.data / ".quarantine" / r.ranked[1]).is_file() and not (r.data / r.ranked[1]).exists()
    assert (r.data / r.ranked[2]).is_file()
    records = Journal(r.data).records()
    assert [(x["why"], x["src"], x["dst"]) for x in records] == [
        ("relabel", r.ranked[0], relabelled), ("delete", r.ranked[1], f".quarantine/{r.ranked[1]}")]
    expect(cards).to_have_count(len(r.ranked))  # reloaded: the quarantined one is gone
    expect(card(page, relabelled).locator(".tag.given")).to_have_text(predicted)

    result = CliRunner().invoke(clean, [str(r.folder), "--undo"])
    assert result.exit_code == 0, result.output
    assert snapshot(r.data) == before
    assert page.errors == []


def test_filters_and_the_duplicates_view(served, page, tmp_path):
    r, _ = served
    expect = sync_api.expect
    page.select_option("#f-label", "cat")
    expect(page.locator("#view .card")).to_have_count(4)
    page.select_option("#f-split", "valid")
    expect(page.locator("#view .card .split")).to_have_text(["valid"] * page.locator("#view .card").count())
    page.select_option("#f-label", "")
    page.select_option("#f-split", "")

    page.keyboard.press("t")  # the duplicates view
    group = page.locator("section.group.exact")
    expect(group).to_have_count(1, timeout=WAIT_MS)
    expect(group.locator("h3")).to_contain_text("Exact copies · 2 files")
    expect(group.locator(".card")).to_have_count(2)
    shot(page, "clean-dupes.png", tmp_path)
    card(page, "dog/copy-of-cat0.png").locator("button.del").click()
    page.keyboard.press("Shift+A")
    expect(page.locator("#message")).to_contain_text("1 moved to .quarantine/", timeout=WAIT_MS)
    assert (r.data / ".quarantine" / "dog" / "copy-of-cat0.png").is_file()
    expect(page.locator("#view .empty")).to_have_text("No duplicates found.", timeout=WAIT_MS)
    assert page.errors == []


def _damage_the_journal(r) -> None:
    _add_duplicate(r)
    journal = r.data / ".quarantine" / "journal.jsonl"
    journal.parent.mkdir()
    journal.write_bytes(b'{"op": "move", "id": 1, "src": "cat/cat1.png"}\n')  # no dst: damaged


def test_a_damaged_journal_is_named_on_the_page(tmp_path):
    with serving(tmp_path, prepare=_damage_the_journal) as (r, srv), \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
        sync_api.expect(page.locator("#message")).to_contain_text(
            "Undo will skip 1 damaged journal line: "
            f"{r.data / '.quarantine' / 'journal.jsonl'} line 1: move record 1: no 'dst'")
        sync_api.expect(page.locator("#view .card")).to_have_count(len(r.ranked) + 1)
        browser.close()
