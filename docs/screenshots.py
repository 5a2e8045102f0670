"""The dashboard screenshots in docs/, from a real run on a throwaway cluster:

    .venv/bin/python docs/screenshots.py          # about 3 minutes; rewrites docs/dashboard-*.png

Six mlp configs train on Fashion-MNIST for two epochs, then get a third; the worst is stopped and the best is cloned
with half its lr and four epochs; then Chromium (Debian's, as the browser test uses) photographs each page.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from playwright.sync_api import Page, expect, sync_playwright

from cerebro_db import sample_data
from cerebro_db.cluster import free_port
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import dashboard_server, temporary_cluster

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
SPACE = {"lr": [0.0003, 0.001, 0.003], "hidden_units": [32, 128]}


def one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return row[0]


def train(dsn: str) -> tuple[int, int]:
    """The workload and the clone the pages show."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        sample_data.load_fashion_mnist(conn, "public.fashion", limit=3000)
        conn.execute(
            "SELECT * FROM prepare_dataset('fashion', 'public.fashion', 'label', '{pixels}',"
            " feature_shape => '{28,28,1}')"
        )
        workload = one(
            conn,
            "SELECT run_model_selection('fashion', 'mlp', %s, max_epochs => 2, name => 'fashion mlp', seed => 7)",
            json.dumps(SPACE),
        )
        Scheduler(dsn).run(until_idle=True)
        conn.execute("UPDATE configs SET max_epochs = 3, status = 'running' WHERE workload_id = %s", [workload])
        conn.execute(  # the worst config so far is stopped by hand (its page shows who did it)
            "UPDATE configs SET status = 'stopped' WHERE config_id ="
            " (SELECT config_id FROM leaderboard WHERE workload_id = %s ORDER BY rank DESC LIMIT 1)",
            [workload],
        )
        best = one(conn, "SELECT config_id FROM leaderboard WHERE workload_id = %s ORDER BY rank LIMIT 1", workload)
        lower = one(conn, "SELECT (params ->> 'lr')::float8 / 2 FROM configs WHERE config_id = %s", best)
        clone = one(conn, "SELECT clone_config(%s, %s)", best, json.dumps({"lr": lower, "max_epochs": 4}))
        Scheduler(dsn).run(until_idle=True)
    return workload, clone


def shoot(page: Page, path: str, name: str, ready: str, tables: int, *, full_page: bool = False) -> None:
    """The page at ``path`` once ``ready`` shows and its ``tables`` are drawn (nothing trains any more, so it no
    longer changes)."""
    page.goto(path)
    expect(page.get_by_text(ready).first).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_have_count(tables)
    for table in page.get_by_test_id("stDataFrame").all():
        expect(table.locator("canvas").first).to_be_visible()  # a table's cells are painted on its canvas
    page.wait_for_load_state("networkidle")
    page.screenshot(path=DOCS / f"dashboard-{name}.png", full_page=full_page)
    print(f"docs/dashboard-{name}.png")


def main() -> None:
    home = tempfile.mkdtemp(prefix="cerebro-screenshots-")
    os.environ |= {"CEREBRO_HOME": home, "CEREBRO_TENSORBOARD_PORT": str(free_port())}  # the dashboard's too
    with temporary_cluster(segments=2) as cluster:
        dsn = cluster.dsn()
        workload, clone = train(dsn)
        with dashboard_server(dsn) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.set_default_timeout(120_000)
            expect.set_options(timeout=120_000)
            shoot(page, f"{url}/", "workloads", "Tick a row", 1)
            shoot(page, f"{url}/launch", "launch", "Grid creates", 0)
            shoot(page, f"{url}/workload?workload={workload}", "workload", "Leaderboard", 1)
            compare = page.get_by_role("heading", name="Compare configs")
            compare.scroll_into_view_if_needed()
            top = compare.bounding_box()
            assert top is not None
            page.screenshot(
                path=DOCS / "dashboard-compare.png", full_page=True, clip={**top, "width": 1400, "height": 900}
            )
            print("docs/dashboard-compare.png")
            shoot(page, f"{url}/config?config={clone}", "config", "Time per phase", 4, full_page=True)
            page.goto(f"{url}/tensorboard_logs?workload={workload}")
            board = page.frame_locator("iframe[title^='TensorBoard']")
            expect(board.locator("scalar-card line-chart").first).to_be_visible()
            page.screenshot(path=DOCS / "dashboard-tensorboard.png")
            print("docs/dashboard-tensorboard.png")
            browser.close()
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
