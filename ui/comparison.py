"""Comparison plots of one workload's configs, as optuna-dashboard draws them: parallel coordinates of the searched
params and the best val metric, the metric against each param, and param importance.

Importance is optuna's ``get_param_importances`` over a study rebuilt from the configs as the TPE procedure rebuilds
its own (cerebro_plpy.procedures): the same distributions from the search space, a trial per completed config.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import altair as alt
import common
import pandas as pd
import search_space_editor as editor
import streamlit as st

from cerebro_plpy import procedures, roster
from cerebro_plpy.params import ParamError

METRIC = "best val accuracy"
#: Importance needs this many completed configs with a metric, and this many params that vary among them.
MIN_CONFIGS = 4
MIN_PARAMS = 2
#: Positive numbers spanning this ratio or more are drawn on a log scale (as lr always is).
LOG_SPAN = 100.0


@dataclass(frozen=True)
class Axis:
    """One searched param as the plots draw it: its distinct values in axis order, and its scale."""

    key: str
    values: tuple[Any, ...]
    categorical: bool
    log: bool

    def position(self, value: Any) -> float:
        """Where ``value`` sits on this axis, from 0 (bottom) to 1 (top)."""
        if self.categorical:
            return self.values.index(value) / (len(self.values) - 1) if len(self.values) > 1 else 0.5
        low, high, point = (math.log10(v) if self.log else float(v) for v in (self.values[0], self.values[-1], value))
        return (point - low) / (high - low) if high > low else 0.5


@dataclass(frozen=True)
class Importance:
    """Param importances (largest first), or what is missing before they can be told."""

    scores: dict[str, float]
    used: int  # completed configs the study holds
    outside: int  # completed configs left out: params outside the search space (added or cloned by hand)
    needs: str | None


def scored(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs that have a validation metric (those the plots can place)."""
    return [config for config in configs if config["best_val_metric"] is not None]


def _categorical(value: Any) -> bool:
    return isinstance(value, str | bool) or not isinstance(value, int | float)


def axes(space: dict[str, Any], configs: list[dict[str, Any]]) -> list[Axis]:
    """An axis per param the search space varies, over the values ``configs`` hold; strings are categories in
    sorted order, numbers a linear or log scale (log for lr, a log range, or positive values spanning 2 decades)."""
    found = []
    for key in editor.searched_keys(space):
        values = [config["params"][key] for config in configs if key in config["params"]]
        if not values:
            continue
        if any(_categorical(value) for value in values):
            found.append(Axis(key, tuple(sorted(set(values), key=str)), categorical=True, log=False))
            continue
        ordered = tuple(sorted(set(values)))
        spec = space[key]
        positive = ordered[0] > 0
        log = positive and (
            key == "lr" or (isinstance(spec, dict) and spec.get("log") is True) or ordered[-1] / ordered[0] >= LOG_SPAN
        )
        found.append(Axis(key, ordered, categorical=False, log=log))
    return found


def _label(config: dict[str, Any]) -> str:
    return f"config {config['config_id']}"


def _params(config: dict[str, Any], found: list[Axis]) -> str:
    return ", ".join(f"{axis.key} {common.number(config['params'][axis.key])}" for axis in found)


def parallel_frame(configs: list[dict[str, Any]], found: list[Axis]) -> pd.DataFrame:
    """Long form: a row per config and axis (the searched params, then the metric), ``position`` in [0, 1]."""
    placed = sorted(scored(configs), key=lambda config: config["best_val_metric"])  # the best lines drawn last, on top
    metrics = [config["best_val_metric"] for config in placed] or [0.0]
    metric_axis = Axis(METRIC, (min(metrics), max(metrics)), categorical=False, log=False)
    rows = []
    for config in placed:
        shared = {
            "config": _label(config),
            "params": _params(config, found),
            "metric": config["best_val_metric"],
            "status": config["status"],
        }
        for axis in found:
            value = config["params"][axis.key]
            rows.append({**shared, "axis": axis.key, "position": axis.position(value), "value": common.number(value)})
        metric = config["best_val_metric"]
        rows.append(
            {**shared, "axis": METRIC, "position": metric_axis.position(metric), "value": common.percent(metric)}
        )
    return pd.DataFrame(rows, columns=["config", "params", "metric", "status", "axis", "position", "value"])


def _ticks(frame: pd.DataFrame) -> pd.DataFrame:
    """A label per distinct value on each axis (the ends only where values are many)."""
    ticks = frame.drop_duplicates(["axis", "position"])[["axis", "position", "value"]]
    crowded = ticks.groupby("axis")["position"].transform("count") > 6
    ends = ticks.groupby("axis")["position"].transform(lambda p: (p == p.min()) | (p == p.max())).astype(bool)
    return ticks[~crowded | ends]


def _tooltip() -> list[alt.Tooltip]:
    return [
        alt.Tooltip("config:N"),
        alt.Tooltip("params:N"),
        alt.Tooltip("metric:Q", title=METRIC, format=".1%"),
        alt.Tooltip("status:N"),
    ]


def _color(legend: bool = True) -> alt.Color:
    shown = alt.Legend(format=".0%") if legend else None
    return alt.Color("metric:Q", title=METRIC, scale=alt.Scale(scheme="viridis"), legend=shown)


def parallel_chart(frame: pd.DataFrame, found: list[Axis]) -> alt.LayerChart:
    """A line per config across the axes, coloured by its metric; hovering a line brings it forward."""
    order = [axis.key for axis in found] + [METRIC]
    x = alt.X("axis:N", sort=order, title=None, axis=alt.Axis(orient="top", labelAngle=0, domain=False, ticks=False))
    y = alt.Y("position:Q", axis=None, scale=alt.Scale(domain=[0, 1]))
    hover = alt.selection_point(fields=["config"], on="pointerover", clear="pointerout")
    base = alt.Chart(frame).encode(x=x, y=y)
    lines = base.mark_line(strokeWidth=2).encode(
        detail="config:N",
        color=_color(),
        opacity=alt.when(hover).then(alt.value(0.95)).otherwise(alt.value(0.35)),
        tooltip=_tooltip(),
    )
    points = base.mark_circle(size=40).encode(color=_color(legend=False), tooltip=_tooltip()).add_params(hover)
    rules = alt.Chart(frame).mark_rule(color="#999").encode(x=x)  # x alone: each axis spans the height
    ticks = alt.Chart(_ticks(frame)).encode(x=x, y=y, text="value:N")
    halo = ticks.mark_text(align="left", dx=7, fontSize=11, stroke="white", strokeWidth=4)  # readable over lines
    labels = ticks.mark_text(align="left", dx=7, fontSize=11, color="#333")
    return alt.LayerChart(layer=[rules, lines, points, halo, labels], height=300)


def scatter_frame(configs: list[dict[str, Any]], axis: Axis, found: list[Axis]) -> pd.DataFrame:
    """A row per config with a metric: its value of ``axis``'s param, and its metric."""
    return pd.DataFrame(
        [
            {
                "config": _label(config),
                "params": _params(config, found),
                "value": config["params"][axis.key],
                "metric": config["best_val_metric"],
                "status": config["status"],
            }
            for config in scored(configs)
        ],
        columns=["config", "params", "value", "metric", "status"],
    )


def scatter_charts(configs: list[dict[str, Any]], found: list[Axis]) -> list[alt.Chart]:
    """The metric against each searched param, a small plot per param (the page lays them out in columns)."""
    plots = []
    for axis in found:
        if axis.categorical:
            x = alt.X("value:N", title=axis.key, sort=list(axis.values), axis=alt.Axis(labelAngle=0))
        else:
            # a few values (a grid's choices) are labelled each, rather than with log ticks that miss them
            labels = (
                alt.Axis(values=list(axis.values), format=".3~g") if len(axis.values) <= 8 else alt.Axis(format=".3~g")
            )
            scale = alt.Scale(type="log" if axis.log else "linear", zero=False, padding=14)
            x = alt.X("value:Q", title=axis.key + (" (log)" if axis.log else ""), scale=scale, axis=labels)
        plots.append(
            alt.Chart(scatter_frame(configs, axis, found), height=220)
            .mark_circle(size=80, opacity=0.85)
            .encode(
                x=x,
                y=alt.Y("metric:Q", title=METRIC, scale=alt.Scale(zero=False), axis=alt.Axis(format=".0%")),
                color=_color(legend=False),  # the y axis tells the metric already
                tooltip=_tooltip(),
            )
        )
    return plots


def importance(model: str, space: dict[str, Any], configs: list[dict[str, Any]]) -> Importance:
    """optuna's importances of the searched params for the completed configs' best val metric."""
    import optuna

    finished = [config for config in scored(configs) if config["status"] == "completed"]
    searched = set(editor.searched_keys(space))
    try:
        # A model outside the roster is a registered script: the database accepted the workload, so it was registered.
        every = procedures.distributions(model, space, registered=model not in roster.ROSTER)
        spaced = {key: dist for key, dist in every.items() if key in searched}
    except ParamError as error:  # a space the roster no longer accepts (a model or param renamed since)
        return Importance({}, 0, len(finished), f"Param importance cannot rebuild the search space: {error}")
    inside = [
        config
        for config in finished
        if all(procedures.fits(dist, config["params"].get(key)) for key, dist in spaced.items())
    ]
    varying = {key: dist for key, dist in spaced.items() if len({str(config["params"][key]) for config in inside}) > 1}
    needs = None
    if len(inside) < MIN_CONFIGS or len(varying) < MIN_PARAMS:
        needs = (
            f"Param importance needs {MIN_CONFIGS} completed configs with a validation metric inside the search "
            f"space (now {len(inside)}) and {MIN_PARAMS} searched params that vary among them (now {len(varying)})."
        )
    elif len({config["best_val_metric"] for config in inside}) == 1:
        needs = "Param importance needs completed configs whose metrics differ: all are equal so far."
    if needs is not None:
        return Importance({}, len(inside), len(finished) - len(inside), needs)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the TPE procedure: no "study created" line per run
    study = optuna.create_study(direction="maximize")
    for config in inside:
        study.add_trial(
            optuna.trial.create_trial(
                params={key: config["params"][key] for key in varying},
                distributions=varying,
                value=config["best_val_metric"],
            )
        )
    # PED-ANOVA (optuna's default, deterministic) asks which values the top quantile of trials concentrates on. Its
    # default top 10 % suits hundreds of trials; of a dozen configs it keeps one or two, which share more than what
    # made them good: ask about the top quarter (at least 2 configs).
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.25, 2 / len(inside)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample warnings; the caption says how many configs it used
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return Importance(dict(scores), len(inside), len(finished) - len(inside), None)


def importance_chart(scores: dict[str, float]) -> alt.LayerChart:
    frame = pd.DataFrame({"param": list(scores), "importance": list(scores.values())})
    bars = alt.Chart(frame).encode(
        x=alt.X(
            "importance:Q", title="importance", axis=alt.Axis(format=".0%", tickCount=5), scale=alt.Scale(domain=[0, 1])
        ),
        y=alt.Y("param:N", sort=list(scores), title=None),
        tooltip=["param:N", alt.Tooltip("importance:Q", format=".1%")],
    )
    text = bars.mark_text(align="left", dx=4).encode(text=alt.Text("importance:Q", format=".0%"))
    return alt.LayerChart(layer=[bars.mark_bar(), text], height=40 * len(scores) + 20)


def section(row: dict[str, Any], configs: list[dict[str, Any]]) -> None:
    """The "Compare configs" part of the workload page, in tabs; only the open tab is computed."""
    st.subheader("Compare configs")
    found = axes(row["search_space"], configs)
    placed = scored(configs)
    if not found:
        st.caption("The search space fixes every param: there is nothing to compare.")
        return
    if len(placed) < 2:
        st.caption("Comparison plots appear once 2 configs have a validation metric.")
        return
    parallel, scatter, importances = st.tabs(
        ["Parallel coordinates", "Metric vs params", "Param importance"],
        key=f"compare_{row['workload_id']}",
        on_change="rerun",
    )
    left_out = len(configs) - len(placed)
    without = f" ({common.plural(left_out, 'config')} without a validation metric yet left out)" if left_out else ""
    if parallel.open:
        with parallel:
            st.altair_chart(parallel_chart(parallel_frame(configs, found), found), width="stretch")
            st.caption(f"A line per config{without}; hover one for its params.")
    if scatter.open:
        with scatter:
            plots = scatter_charts(configs, found)
            for start in range(0, len(plots), 3):
                for column, plot in zip(st.columns(3), plots[start : start + 3], strict=False):
                    column.altair_chart(plot, width="stretch")
            st.caption(f"A point per config{without}; log x axes are marked (log).")
    if importances.open:
        with importances:
            found_importance = importance(row["model"], row["search_space"], configs)
            if found_importance.needs is not None:
                st.caption(found_importance.needs)
            else:
                st.altair_chart(importance_chart(found_importance.scores), width="stretch")
                outside = found_importance.outside
                st.caption(
                    f"optuna's PED-ANOVA importance over {common.plural(found_importance.used, 'completed config')}"
                    + (f" ({outside} outside the search space left out)" if outside else "")
                    + ": how much each param decides which configs reach the top quarter."
                )
