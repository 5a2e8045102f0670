"""The comparison plots: their data shaping and importance on synthetic configs, and the section on a real workload."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import comparison
import psycopg
import pytest

from tests.conftest import TINY_CNN, launch, run_until_idle
from tests.ui.conftest import open_page


def config(config_id: int, params: dict[str, Any], metric: float | None, status: str = "completed") -> dict[str, Any]:
    """A row as client.configs returns it (the fields the comparison reads)."""
    return {"config_id": config_id, "params": params, "best_val_metric": metric, "status": status}


def grid(space: dict[str, Any], score: Callable[[dict[str, Any]], float]) -> list[dict[str, Any]]:
    """A completed config per point of ``space`` (lists of choices, fixed values), its metric ``score(params)``."""
    choices = [spec if isinstance(spec, list) else [spec] for spec in space.values()]
    points = [dict(zip(space, values, strict=True)) for values in itertools.product(*choices)]
    return [config(i, point, score(point)) for i, point in enumerate(points, start=1)]


def test_lr_is_a_log_axis_and_other_numbers_linear_unless_they_span_two_decades() -> None:
    space = {"lr": [1e-4, 1e-3, 1e-2], "batch_size": [16, 32, 64], "dense_units": [4, 40, 400], "filters": 4}
    configs = grid(space, lambda p: 0.5)
    by_key = {axis.key: axis for axis in comparison.axes(space, configs)}
    assert list(by_key) == ["lr", "batch_size", "dense_units"]  # filters is fixed: not searched
    assert (by_key["lr"].log, by_key["batch_size"].log, by_key["dense_units"].log) == (True, False, True)
    assert [by_key["lr"].position(v) for v in (1e-4, 1e-3, 1e-2)] == pytest.approx([0, 0.5, 1])
    assert by_key["batch_size"].position(32) == pytest.approx(1 / 3)
    scales = [
        plot.to_dict()["encoding"]["x"]["scale"]["type"]
        for plot in comparison.scatter_charts(configs, list(by_key.values()))
    ]
    assert scales == ["log", "linear", "log"]


def test_a_categorical_param_is_an_ordinal_axis() -> None:
    space = {"optimizer": ["sgd", "adam", "rmsprop"], "lr": [0.001]}
    configs = grid(space, lambda p: 0.5)
    (axis,) = comparison.axes(space, configs)
    assert axis.categorical and axis.values == ("adam", "rmsprop", "sgd")
    assert [axis.position(v) for v in ("adam", "rmsprop", "sgd")] == [0, 0.5, 1]
    (plot,) = comparison.scatter_charts(configs, [axis])
    assert plot.to_dict()["encoding"]["x"]["type"] == "nominal"
    frame = comparison.parallel_frame(configs, [axis])
    assert set(frame[frame["axis"] == "optimizer"]["value"]) == {"adam", "rmsprop", "sgd"}


def test_configs_without_a_metric_are_left_out() -> None:
    space = {"lr": [0.001, 0.01], "batch_size": [32, 64]}
    configs = [
        config(1, {"lr": 0.001, "batch_size": 32}, 0.6),
        config(2, {"lr": 0.01, "batch_size": 64}, 0.8),
        config(3, {"lr": 0.01, "batch_size": 32}, None, "pending"),
    ]
    found = comparison.axes(space, configs)
    frame = comparison.parallel_frame(configs, found)
    assert set(frame["config"]) == {"config 1", "config 2"}
    assert len(frame) == 2 * 3  # two params and the metric per config
    metric_rows = frame[frame["axis"] == comparison.METRIC].set_index("config")["position"]
    assert (metric_rows["config 1"], metric_rows["config 2"]) == (0, 1)
    assert list(comparison.scatter_frame(configs, found[0], found)["config"]) == ["config 1", "config 2"]


@pytest.mark.parametrize("dominant", ["lr", "batch_size", "optimizer"])
def test_importance_ranks_the_param_that_decides_the_metric_first(dominant: str) -> None:
    space = {"lr": [0.0003, 0.001, 0.003], "batch_size": [16, 64], "optimizer": ["adam", "sgd"], "filters": 4}
    effects = {"lr": {0.0003: 0.0, 0.001: 0.4, 0.003: 0.2}, "batch_size": {16: 0.4, 64: 0.0}}
    effects["optimizer"] = {"adam": 0.4, "sgd": 0.0}

    def score(params: dict[str, Any]) -> float:
        # the dominant param decides; the others nudge by less than a point
        return 0.5 + sum(effect[params[key]] * (1 if key == dominant else 0.01) for key, effect in effects.items())

    found = comparison.importance("cnn", space, grid(space, score))
    assert found.needs is None and found.used == 12
    assert list(found.scores)[0] == dominant, found.scores
    assert set(found.scores) == {"lr", "batch_size", "optimizer"}  # filters is fixed
    assert found.scores == comparison.importance("cnn", space, grid(space, score)).scores  # reproducible


def test_too_few_completed_configs_give_no_importance() -> None:
    space = {"lr": [0.001, 0.003], "batch_size": [16, 64]}
    configs = grid(space, lambda p: p["lr"] * 100 + p["batch_size"] / 1000)
    configs[-1]["status"] = "running"  # 3 completed
    found = comparison.importance("cnn", space, configs)
    assert found.scores == {} and found.needs is not None
    assert "needs 4 completed configs" in found.needs and "(now 3)" in found.needs
    configs[-1]["status"] = "completed"
    configs[0]["params"] = {"lr": 0.002, "batch_size": 16}  # cloned by hand: outside the grid
    found = comparison.importance("cnn", space, configs)
    assert (found.used, found.outside, found.scores) == (3, 1, {})


def test_one_varying_param_gives_no_importance() -> None:
    space = {"lr": [0.001, 0.003, 0.01, 0.03], "batch_size": [16, 64]}
    configs = [config(i, {"lr": lr, "batch_size": 16}, lr) for i, lr in enumerate(space["lr"])]
    found = comparison.importance("cnn", space, configs)
    assert found.needs is not None and "2 searched params that vary among them (now 1)" in found.needs


def test_a_space_the_roster_refuses_gives_a_message_not_a_traceback() -> None:
    space = {"lr": [0.001, 0.003], "renamed": [1, 2]}
    found = comparison.importance("cnn", space, grid({"lr": [0.001, 0.003]}, lambda p: p["lr"]))
    assert found.scores == {} and found.needs is not None and "'renamed'" in found.needs


def test_the_workload_page_compares_its_configs(conn: psycopg.Connection[Any], fashion_2seg: str, dsn: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.001, 0.01], "batch_size": [16, 64], **TINY_CNN}, epochs=1)
    app = open_page("workload_detail", workload=str(workload))
    assert "Comparison plots appear once 2 configs have a validation metric." in [c.value for c in app.caption]
    run_until_idle(dsn)
    app.run()
    assert not app.exception, app.exception
    assert "Compare configs" in [header.value for header in app.subheader]
    assert [tab.label for tab in app.tabs] == ["Parallel coordinates", "Metric vs params", "Param importance"]
    charts = len(app.get("vega_lite_chart"))
    assert charts == 3  # the two learning curves, the parallel coordinates (only the open tab is drawn)
    app.session_state[f"compare_{workload}"] = "Metric vs params"
    app.run()
    assert len(app.get("vega_lite_chart")) == 2 + 2  # a plot per searched param: lr, batch_size
    app.session_state[f"compare_{workload}"] = "Param importance"
    app.run()
    assert not app.exception, app.exception
    captions = "\n".join(c.value for c in app.caption)
    assert "PED-ANOVA importance over 4 completed configs" in captions, captions
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
