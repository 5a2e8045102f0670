"""Learning curves and the leaderboard that chooses them: data shaping and Altair charts, without Streamlit.

Any page draws any set of configs' curves with :func:`chart` on the rows of
``client.curves_with_ancestors(conn, config_ids)``: a clone's line continues its ancestors' epochs (drawn faded),
and the chart zooms and pans (drag, wheel; double-click resets), isolates a config (click it in the legend;
shift-click adds one), and its tooltips name the config's searched params.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import altair as alt
import pandas as pd

Row = dict[str, Any]
Axis = Literal["epoch", "wall clock"]

#: What a chart can show: the metric's column stem in the rows -> its title.
VALUES = {"loss": "loss", "metric": "accuracy"}
SPLITS = (("train", "train"), ("validation", "val"))
#: A line's parts: its config's own epochs, and those it inherited from its ancestors.
PARTS = ["own", "inherited"]
#: Configs a leaderboard selects at first, so the chart stays readable.
DEFAULT_CURVES = 5


def label(config_id: int) -> str:
    return f"config {config_id}"


def short(value: Any) -> str:
    """Floats with 3 significant digits (as ``common.number``; this module stays importable without Streamlit)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def params_text(params: dict[str, Any] | None) -> str:
    return ", ".join(f"{key} {short(value)}" for key, value in (params or {}).items()) or "defaults"


def points(rows: Iterable[Row], value: str) -> pd.DataFrame:
    """The chart's long frame: one row per point and split, with ``part`` ``own`` or ``inherited``.

    A line's last inherited point is repeated as its first own point, so the config's own (solid) line starts at
    its parent's point at the clone epoch, and the inherited (faded) part runs up to it.
    """
    rows = list(rows)
    own_lines = {row["config_id"] for row in rows if not row["inherited"]}
    junctions: dict[int, Row] = {}
    for row in rows:  # ordered by epoch within a line: the last inherited point wins
        if row["inherited"] and row["config_id"] in own_lines:
            junctions[row["config_id"]] = row
    drawn = [(row, "inherited" if row["inherited"] else "own") for row in rows]
    drawn += [(row, "own") for row in junctions.values()]
    return pd.DataFrame(
        [
            {
                "config": label(row["config_id"]),
                "config_id": row["config_id"],
                "workload": row["workload_id"],
                "epoch": row["epoch"],
                "finished at": row["finished_at"],
                "split": split,
                "part": part,
                "trained by": label(row["from_config"]),
                "params": params_text(row["searched_params"]),
                "value": row[f"{prefix}_{value}"],
            }
            for row, part in drawn
            for split, prefix in SPLITS
        ],
        columns=[
            "config",
            "config_id",
            "workload",
            "epoch",
            "finished at",
            "split",
            "part",
            "trained by",
            "params",
            "value",
        ],
    ).sort_values(["config_id", "split", "part", "epoch"], kind="stable")


def legend(orient: Literal["top", "bottom"], **options: Any) -> alt.Legend:
    """A legend above or under the plot (it grows the chart's height instead of being clipped beside it), its
    symbols line strokes at full opacity (the marks' opacity says which config is isolated, not the legend's)."""
    return alt.Legend(
        orient=orient, direction="horizontal", symbolType="stroke", symbolStrokeColor="#888", symbolOpacity=1, **options
    )


def chart(
    rows: Iterable[Row],
    value: Literal["loss", "metric"] = "loss",
    *,
    x: Axis = "epoch",
    log: bool = False,
    height: int = 260,
) -> alt.LayerChart:
    """The curves of the configs in ``rows`` (``client.curves_with_ancestors``) for ``value``: colour by config
    (ordered by id, a categorical scheme), dash by split, inherited parts faded and thin; ``x`` epochs or wall
    clock (each epoch's ``finished_at``), ``log`` a log y axis. Legends sit below the plot, so they never clip."""
    title = VALUES[value]
    frame = points(rows, value)
    if log:  # a log scale has no place for 0 (an accuracy of 0): leave such points out
        frame = frame[frame["value"] > 0]
    configs = [label(config_id) for config_id in sorted(set(frame["config_id"]))]
    isolate = alt.selection_point(name="isolate", fields=["config"], bind="legend")
    zoom = alt.selection_interval(name="zoom", bind="scales", encodings=["x", "y"])
    x_encoding = (
        alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))
        if x == "epoch"
        else alt.X("finished at:T", title="finished at (wall clock)")
    )
    # others fade while a config is isolated (the condition is the fade: the legends keep full opacity)
    opacity = (
        alt.when(~isolate)
        .then(alt.value(0.07))
        .otherwise(alt.Opacity("part:N", scale=alt.Scale(domain=PARTS, range=[1.0, 0.4]), legend=None))
    )
    base = alt.Chart(frame).encode(
        x=x_encoding,
        y=alt.Y("value:Q", title=title, scale=alt.Scale(zero=False, type="log" if log else "linear")),
        color=alt.Color(
            "config:N",
            title="config",
            scale=alt.Scale(domain=configs, scheme="tableau10" if len(configs) <= 10 else "category20"),
            sort=configs,
            legend=legend("bottom", columns=min(len(configs), 5) or 1, symbolLimit=0, symbolStrokeWidth=3),
        ),
        opacity=opacity,
        tooltip=[
            "config",
            "workload",
            "params",
            "split",
            "epoch",
            alt.Tooltip("value:Q", title=title, format=".4g"),
            alt.Tooltip("finished at:T", format="%H:%M:%S"),
            "trained by",
        ],
    )
    lines = base.mark_line().encode(
        strokeDash=alt.StrokeDash("split:N", title="split", legend=legend("top", symbolStrokeWidth=2)),
        strokeWidth=alt.StrokeWidth(
            "part:N",
            title="epochs",
            scale=alt.Scale(domain=PARTS, range=[2.5, 1.2]),
            legend=legend("top", labelExpr=f"datum.label == '{PARTS[0]}' ? 'own' : 'inherited (faded)'"),
        ),
    )
    # points of their own layer: a line's point overlay would turn the legends' line symbols into blank dots
    dots = base.mark_point(filled=True, size=24)
    return (
        alt.LayerChart(layer=[lines.add_params(isolate, zoom), dots], title=title)
        # fit the width only: the legends add to the height instead of squeezing the plot (Streamlit's theme fits
        # both, so many configs shrank the plot and clipped legends)
        .properties(height=height, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
    )


def reselect(
    shown_before: Sequence[int], chosen_before: Sequence[int], selected_rows: Sequence[int] | None, shown: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Which configs are chosen, by id, and their positions in the table now shown.

    A table's selection is by row position, but rows move (ranking, filters, new configs): ``selected_rows`` are
    positions in ``shown_before``, the ids the table showed when the user selected (None: no selection yet, keep
    ``chosen_before``). Chosen configs the table did not show (filtered out) stay chosen.
    """
    chosen = list(chosen_before)
    if selected_rows is not None:
        picked = [shown_before[row] for row in selected_rows if row < len(shown_before)]
        chosen = [config for config in chosen if config not in shown_before] + picked
    return chosen, [position for position, config in enumerate(shown) if config in chosen]


def table(configs: Sequence[Row], *, across: bool = False) -> pd.DataFrame:
    """The leaderboard's frame: a row per config, its searched params as columns (``across``: with its workload)."""
    keys = list(dict.fromkeys(key for config in configs for key in config["searched_params"] or {}))
    columns = ["config", *(["workload"] if across else []), "rank", "status", "epochs", "max epochs"]
    columns += ["best val accuracy", "val loss", "best epoch", *keys, "cloned from"]
    return pd.DataFrame(
        [
            {
                "config": config["config_id"],
                "workload": config.get("workload_id"),
                "rank": config["rank"],
                "status": config["status"],
                "epochs": config["epochs_done"],
                "max epochs": config["max_epochs"],
                "best val accuracy": config["best_val_metric"],
                "val loss": config["best_val_loss"],
                "best epoch": config["best_epoch"],
                **{key: (config["searched_params"] or {}).get(key) for key in keys},
                "cloned from": config["cloned_from"],
            }
            for config in configs
        ],
        columns=columns,
    )
