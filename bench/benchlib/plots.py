"""The PNG files of bench/approaches.py and bench/simulate_scale.py (matplotlib, from the dev extra)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.baselines import Run
from benchlib.fit import Validation
from benchlib.simulation import SCHEDULE_NAMES, SCHEDULES, Result


def _pyplot() -> Any:
    """matplotlib.pyplot without a display, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(runs: Sequence[Run], labels: Sequence[str], epochs: int, png: Path) -> bool:
    """Validation accuracy per epoch, one panel per config and a line per approach; False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 3.5), sharey=True, squeeze=False)
    for ax, config in zip(axes[0], labels, strict=True):
        for r in runs:
            points = r.history.get(config, [])
            style = "--" if r.key == "task" else "-"  # task parallelism trains exactly as sequential Keras
            ax.plot([p[0] for p in points], [p[2] for p in points], style, marker="o", label=r.key)
        ax.set_title(config)
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, epochs + 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy")
    axes[0][-1].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def plot_scale(path: Path, results: Sequence[Result], validations: Sequence[Validation], shown: Sequence[int]) -> None:
    """Makespan and utilization per schedule against segments, and the validation runs measured vs predicted."""
    plt = _pyplot()
    if plt is None:
        raise RuntimeError("matplotlib is missing (pip install -e '.[dev]')")
    fig, (ax_time, ax_util, ax_val) = plt.subplots(1, 3, figsize=(17, 5))
    styles = {"mop": "-", "bsp": "--", "task": ":"}
    colors = dict(zip(shown, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for schedule, configs in itertools.product(SCHEDULES, shown):
        cell = sorted((r for r in results if r.schedule == schedule and r.configs == configs), key=lambda r: r.segments)
        if not cell:
            continue
        label = f"{SCHEDULE_NAMES[schedule]}, {configs} configs"
        x = [r.segments for r in cell]
        ax_time.plot(x, [r.makespan_s / 3600 for r in cell], styles[schedule], color=colors[configs], label=label)
        ax_util.plot(x, [100 * r.utilization for r in cell], styles[schedule], color=colors[configs], label=label)
    for ax in (ax_time, ax_util):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("segments")
    ax_time.set_yscale("log")
    ax_time.set_ylabel("predicted makespan (h)")
    ax_time.set_title("makespan")
    ax_util.set_ylabel("mean segment utilization (%)")
    ax_util.set_title("utilization")
    ax_util.legend(fontsize=7)
    if validations:
        top = 1.1 * max(max(v.measured_s, v.predicted_s, v.resampled_s) for v in validations)
        ax_val.plot([0, top], [0, top], color="grey", linewidth=0.8)
        ax_val.fill_between([0, top], [0, 0.9 * top], [0, 1.1 * top], color="grey", alpha=0.15, label="±10%")
        for v in validations:
            bar = ax_val.errorbar(
                v.measured_s, v.predicted_s, yerr=v.predicted_sd, fmt="o", label=f"{v.segments} segment(s), mean units"
            )
            ax_val.errorbar(
                v.measured_s,
                v.resampled_s,
                yerr=v.resampled_sd,
                fmt="s",
                fillstyle="none",
                color=bar.lines[0].get_color(),
                label=f"{v.segments} segment(s), resampled units",
            )
        ax_val.set_xlim(0, top)
        ax_val.set_ylim(0, top)
        ax_val.legend()
    ax_val.set_xlabel("measured makespan (s)")
    ax_val.set_ylabel("predicted makespan (s)")
    ax_val.set_title("validation: MOP, real runs on this machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
