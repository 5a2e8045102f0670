"""End to end in a real headless Chromium: launch from the form, watch a curve appear live, stop a config."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cerebro_db.testing.clusters import dashboard_server
from tests.conftest import run_until_idle, unique

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (install.sh); Playwright cannot download its own here


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: ./install.sh installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    # Typing filters the list: a long one (the suite's database holds many datasets) renders only its first
    # options, so the wanted one may not be in the page until it is searched for.
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.slow  # 16 s within the suite, 35 s on its own: its new backends import TensorFlow cold
def test_launch_watch_and_stop_from_a_browser(browser: Browser, dsn: str, fashion_2seg: str, tmp_path: Path) -> None:
    name = unique("browser")
    with dashboard_server(dsn) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1900})
        page.set_default_timeout(30_000)
        expect.set_options(timeout=60_000)  # the first units import TensorFlow in new backends
        page.goto(f"{url}/launch")
        choose(page, "Prepared dataset", fashion_2seg)
        expect(page.get_by_text("Grid creates 2 configs × 5 epochs")).to_be_visible()  # lr 0.001, 0.003; mlp
        page.get_by_label("Max epochs").fill("2")
        page.get_by_label("Max epochs").press("Enter")
        page.get_by_label("Name").fill(name)
        page.get_by_label("Name").press("Enter")
        expect(page.get_by_text("Grid creates 2 configs × 2 epochs")).to_be_visible()
        page.screenshot(path=tmp_path / "launch.png", full_page=True)
        page.get_by_role("button", name=re.compile("Launch")).click()

        expect(page.get_by_role("heading", name=re.compile(name))).to_be_visible()  # the workload's own page
        expect(page.get_by_text("No epoch has finished yet")).to_be_visible()
        with psycopg.connect(dsn) as conn:
            row: Any = conn.execute("SELECT workload_id FROM workloads WHERE name = %s", [name]).fetchone()
        workload = row[0]
        assert run_until_idle(dsn, max_units=4)  # the first epoch of each config, on both segments
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()  # refreshed, no reload
        expect(page.get_by_test_id("stMetricValue").filter(has_text="2 / 4")).to_be_visible()  # all 4 units shown
        page.screenshot(path=tmp_path / "workload.png", full_page=True)

        page.get_by_role("button", name="Stop", exact=True).first.click()
        expect(page.get_by_text(re.compile(r"config \d+: stopped"))).to_be_visible()
        page.screenshot(path=tmp_path / "stopped.png", full_page=True)
    with psycopg.connect(dsn) as conn:
        statuses = [
            status
            for (status,) in conn.execute("SELECT status FROM configs WHERE workload_id = %s ORDER BY 1", [workload])
        ]
        conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
        conn.commit()
    assert sorted(statuses) == ["pending", "stopped"] or sorted(statuses) == ["running", "stopped"]
    assert (tmp_path / "stopped.png").stat().st_size > 10_000
