"""End to end in a real headless Chromium: launch from the form, watch a curve appear live, clone under a moving
ranking, stop and resume a config and watch its curve grow; TensorBoard inside the dashboard draws a scalar."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from cerebro_db.cluster import free_port
from cerebro_db.testing.clusters import dashboard_server
from tests.conftest import run_until_idle, unique
from tests.ui.conftest import named_workload


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    # Typing filters the list: a long one (the suite's database holds many datasets) renders only its first
    # options, so the wanted one may not be in the page until it is searched for.
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


def steer_row(page: Page, config_id: int) -> Locator:
    """The config's row under "Steer configs": the innermost row of columns holding its page link."""
    link = page.get_by_role("link", name=re.compile(rf"^{config_id}( ←.*)?$"))
    return page.get_by_test_id("stHorizontalBlock").filter(has=link).last


def rank_first(dsn: str, config_id: int) -> None:
    """As if the config's first epoch had validated best of all (the leaderboard ranks by it)."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SET LOCAL cerebro.internal = on")
        conn.execute("UPDATE epoch_metrics SET val_metric = 1 WHERE config_id = %s AND epoch = 1", [config_id])


@pytest.mark.slow  # 30 s within the suite, 45 s on its own: its new backends import TensorFlow cold
def test_launch_watch_steer_and_resume_from_a_browser(
    browser: Browser, dsn: str, fashion_2seg: str, tmp_path: Path
) -> None:
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
        expect(page.get_by_text("No epoch of the chosen configs has finished yet")).to_be_visible()
        with psycopg.connect(dsn) as conn:
            row: Any = conn.execute("SELECT workload_id FROM workloads WHERE name = %s", [name]).fetchone()
            workload = row[0]
            assert run_until_idle(dsn, max_units=4)  # the first epoch of each config, on both segments
            ranked = [
                (config, params["lr"])
                for config, params in conn.execute(
                    "SELECT config_id, params FROM leaderboard WHERE workload_id = %s ORDER BY rank", [workload]
                )
            ]
        (first, _), (second, second_lr) = ranked
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()  # refreshed, no reload
        expect(page.get_by_test_id("stMetricValue").filter(has_text="2 / 4")).to_be_visible()  # all 4 units shown

        # The runner-up's Clone popover stays with it, and alone, while the ranking moves it to the top.
        steer_row(page, second).get_by_role("button", name="Clone", exact=True).click()
        lr = page.get_by_test_id("stPopoverBody").get_by_label("lr")
        expect(lr).to_have_value(str(second_lr))
        rank_first(dsn, second)
        expect(page.get_by_test_id("stMetricValue").filter(has_text="100.0 %")).to_be_visible()  # refreshed: re-ranked
        expect(lr).to_have_count(1)
        expect(lr).to_have_value(str(second_lr))
        page.get_by_role("button", name="Clone config").click()
        expect(page.get_by_text(re.compile(rf"config \d+ cloned from config {second}"))).to_be_visible()
        page.screenshot(path=tmp_path / "cloned.png", full_page=True)

        steer_row(page, first).get_by_role("button", name="Stop", exact=True).click()
        expect(page.get_by_text(f"config {first}: stopped")).to_be_visible()
        steer_row(page, first).get_by_role("button", name="Resume", exact=True).click()
        expect(page.get_by_text(f"config {first}: resumed")).to_be_visible()

        # The resumed config's curve grows while the page is open: the loss chart is redrawn with epoch 2.
        loss_chart = page.get_by_test_id("stVegaLiteChart").first
        before = loss_chart.screenshot()
        assert run_until_idle(dsn)
        expect(page.get_by_text("Not refreshing: nothing in this workload is pending or running.")).to_be_visible()
        assert loss_chart.screenshot() != before
        page.screenshot(path=tmp_path / "finished.png", full_page=True)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT config_id, cloned_from, status, epochs_done FROM configs WHERE workload_id = %s ORDER BY 1",
            [workload],
        ).fetchall()
        conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
        conn.commit()
    assert [(cloned_from, status, epochs) for _, cloned_from, status, epochs in rows] == [
        (None, "completed", 2),
        (None, "completed", 2),
        (second, "completed", 2),
    ]
    assert (tmp_path / "finished.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tensorboard_page_in_a_browser_shows_a_scalar(
    browser: Browser,
    dsn: str,
    fashion_2seg: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CEREBRO_HOME", str(tmp_path))  # the dashboard server inherits the environment
    monkeypatch.setenv("CEREBRO_TENSORBOARD_PORT", str(free_port()))
    with psycopg.connect(dsn, autocommit=True) as conn:
        workload, config = named_workload(conn, fashion_2seg, unique("tb browser"), epochs=2)
        run_until_idle(dsn)
        with dashboard_server(dsn) as url:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            expect.set_options(timeout=60_000)  # TensorBoard and the export import TensorFlow first
            page.goto(f"{url}/tensorboard_logs?workload={workload}")
            board = page.frame_locator("iframe[title^='TensorBoard']")
            expect(board.get_by_text(f"config-{config}/validation").first).to_be_visible()  # the runs list
            expect(board.get_by_text("loss", exact=True).first).to_be_visible()  # a scalar card's tag
            expect(board.locator("scalar-card line-chart").first).to_be_visible()  # a drawn curve
            page.screenshot(path=tmp_path / "tensorboard.png", full_page=True)
        conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
    assert (tmp_path / "tensorboard.png").stat().st_size > 10_000
