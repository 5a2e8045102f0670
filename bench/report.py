"""bench/README.md's results, generated from bench/results/: every figure there comes from a file a script wrote.

Each generated part of the README sits between ``<!-- report: NAME -->`` and ``<!-- /report: NAME -->``; this
script rewrites what is between them from the results files (the printed tables ``NAME.txt`` that
bench/run_all.sh keeps, and the CSV files the scripts write). Text outside the markers carries no figures::

    .venv/bin/python bench/report.py            # rewrite bench/README.md
    .venv/bin/python bench/report.py --check    # exit 1 (and show the difference) if it is out of date
"""

from __future__ import annotations

import argparse
import csv
import difflib
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from benchlib import RESULTS_DIR
from benchlib.fit import TARGET_ERROR, cross_validate, read_runs
from benchlib.sim_report import prediction_table

README = Path(__file__).resolve().parent / "README.md"
BLOCK = re.compile(r"(<!-- report: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /report: (?P=name) -->)", re.S)
#: Lines of a printed report that name where the script wrote (the machine's paths, not results).
WHERE_WRITTEN = ("wrote ", "written: ", "results: ", "unit log: ")
#: The scale sweep's config counts shown in the README (results/simulate_scale.txt has them all).
SHOWN = ("8", "64", "256")


def rows(results: Path, name: str) -> list[dict[str, str]]:
    with open(results / name, newline="") as file:
        return list(csv.DictReader(file))


def printed(results: Path, name: str, stop: str | None = "Notes:") -> list[str]:
    """A script's printed report (``NAME.txt``) up to the line starting with ``stop``, without where it wrote."""
    lines = []
    for line in (results / f"{name}.txt").read_text().strip("\n").splitlines():
        if stop is not None and line.startswith(stop):
            break
        if not line.startswith(WHERE_WRITTEN):
            lines.append(line.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines


def code(lines: Sequence[str]) -> list[str]:
    return ["```", *lines, "```"]


def pct(share: float) -> str:
    return f"{100 * share:.2f}%"


def approaches(results: Path) -> list[str]:
    epochs = rows(results, "approaches_epochs.csv")
    acc = {(r["approach"], r["config"], r["epoch"]): float(r["val_acc"]) for r in epochs}
    averaging = [acc[key] - acc[("sequential", *key[1:])] for key in acc if key[0] == "averaging"]
    same = all(acc[key] == acc[("sequential", *key[1:])] for key in acc if key[0] == "task")
    return [
        *code(printed(results, "approaches")),
        f"- Model averaging's validation accuracy minus sequential Keras's, per config and epoch:"
        f" {100 * min(averaging):+.1f} to {100 * max(averaging):+.1f} points; task parallelism's is"
        + (" identical to sequential Keras's in every config and epoch." if same else " not identical to it."),
    ]


def hop_overhead(results: Path) -> list[str]:
    models = rows(results, "hop_overhead.csv")
    low = min(models, key=lambda r: float(r["hop_share"]))
    high = max(models, key=lambda r: float(r["hop_share"]))
    db = max(models, key=lambda r: float(r["state_bytes"]))
    return [
        *code(printed(results, "hop_overhead")),
        f"- Hop share from {pct(float(low['hop_share']))} ({low['model']}) to {pct(float(high['hop_share']))}"
        f" ({high['model']}) on a {models[0]['shard_rows']}-row shard.",
        f"- The largest state ({db['model']}, {int(db['state_bytes']) / 2**20:.0f} MiB): database part"
        f" {float(db['db_ms']):.0f} ms of a {float(db['hop_ms']):.0f} ms hop"
        + (
            f" (before: {float(db['before_db_ms']):.0f} ms of {float(db['before_hop_ms']):.0f} ms; state-sized copies"
            f" per local unit {float(db['before_copies']):.0f} -> {float(db['state_copies']):.0f})."
            if db.get("before_hop_ms")
            else "."
        ),
    ]


def data_path(results: Path) -> list[str]:
    return code(printed(results, "data_path"))


def claim_latency(results: Path) -> list[str]:
    return code(printed(results, "claim_latency", stop=None))


def isolation(results: Path) -> list[str]:
    claims = rows(results, "isolation_claims.csv")
    table = [
        "| victim's workload | makespan s | vs alone | epochs lost | MOP violations | the other tenant |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['scenario']} | {float(r['makespan_s']):.1f} | {float(r['ratio']):.2f}x | {r['epochs_lost']}"
            f" | {r['mop_violations']} | {r['other_tenant']} |"
            for r in rows(results, "isolation.csv")
        ),
    ]
    sizes = " / ".join(f"{int(r['pending_configs']):,}" for r in claims)
    median = " / ".join(f"{float(r['median_ms']):.2f}" for r in claims)
    p95 = " / ".join(f"{float(r['p95_ms']):.2f}" for r in claims)
    return [
        *table,
        "",
        f"`claim_unit` with one user's {sizes} pending configs, in the same run (`results/isolation_claims.csv`):"
        f" median {median} ms, p95 {p95} ms.",
    ]


def workload(results: Path) -> list[str]:
    return code(printed(results, "workload"))


def mop_vs_keras(results: Path) -> list[str]:
    return code(printed(results, "mop_vs_keras"))


def simulate_scale(results: Path) -> list[str]:
    validation = printed(results, "simulate_scale", stop="Scale:")
    printed_all = printed(results, "simulate_scale", stop=None)
    scale = printed_all[next(i for i, line in enumerate(printed_all) if line.startswith("Scale:")) :]
    # The sweep's rows start with their config count; the README shows a selection of them.
    scale = [line for line in scale if not line.split("|")[0].strip().isdigit() or line.split("|")[0].strip() in SHOWN]
    runs = read_runs(results / "simulate_scale_units.csv", results / "simulate_scale.csv")
    prediction = cross_validate(runs[1], runs[2], seeds=20)
    cells: dict[tuple[int, int], dict[str, float]] = {}
    replication: dict[tuple[int, int], int] = {}
    for r in rows(results, "simulate_scale.csv"):
        if r["kind"] != "scale":
            continue
        key = (int(r["configs"]), int(r["segments"]))
        name = r["schedule"] if r["schedule"] != "mop" else f"mop {r['rule']} {r['replication']}"
        cells.setdefault(key, {})[name] = float(r["makespan_s"])
        if r["schedule"] == "mop" and r["rule"] == "fair":
            replication[key] = max(replication.get(key, 1), int(r["replication"]))
    for key, v in cells.items():
        v["mop"] = v[f"mop fair {replication[key]}"]
    more = [v for (configs, segments), v in cells.items() if configs > segments]
    fewer = [v for (configs, segments), v in cells.items() if configs <= segments]
    vs_bsp = [v["bsp"] / v["mop"] for v in more]
    vs_task = [v["task"] / v["mop"] for v in more]
    few_bsp = [v["bsp"] / v["mop"] for v in fewer]
    one_copy = [v["task"] / v["mop fair 1"] for v in cells.values()]
    longest = [v["mop fair 1"] / v["mop longest 1"] for v in cells.values()]
    by_r = Counter(replication.values())
    return [
        *code(validation),
        "",
        "Predicted from the other run: the 2-segment run's makespan from the 1-segment run's unit log alone"
        " (`benchlib.fit.cross_validate`, 20 seeds, computed by `bench/report.py` from"
        " `results/simulate_scale_units.csv` and `results/simulate_scale.csv`; `simulate_scale.py` now prints it"
        f" too and fails beyond {100 * TARGET_ERROR:.0f}%):",
        *code(prediction_table([prediction]).splitlines()),
        "",
        f"Scale (the rows for {', '.join(SHOWN)} configs; `results/simulate_scale.txt` has every cell):",
        *code(scale),
        f"- With more configs than segments ({len(more)} cells), MOP's speed-up is {min(vs_bsp):.2f}-{max(vs_bsp):.2f}x"
        f" vs BSP and {min(vs_task):.2f}-{max(vs_task):.2f}x vs task parallelism; with no more configs than"
        f" segments ({len(fewer)} cells) {min(few_bsp):.2f}-{max(few_bsp):.2f}x vs BSP (MOP at each cell's r).",
        f"- On one copy of the data MOP is {min(one_copy):.2f}-{max(one_copy):.2f}x task parallelism; the smallest"
        " replication that reaches the target: "
        + ", ".join(f"r = {r} in {n} cells" for r, n in sorted(by_r.items()))
        + ". The longest-remaining-work rule is"
        f" {min(longest):.2f}-{max(longest):.2f}x the fair rule's speed on one copy (below 1: slower).",
    ]


def scaling(results: Path) -> list[str]:
    return code(printed(results, "scaling"))


def autonomy(results: Path) -> list[str]:
    return code(printed(results, "autonomy"))


def feature_transfer(results: Path) -> list[str]:
    wall = {r["mode"]: float(r["wall_s"]) for r in rows(results, "feature_transfer.csv")}
    return [
        *code(printed(results, "feature_transfer")),
        f"- (b) staged materialization: {wall['off'] / wall['on']:.2f}x the naive run's speed (target >= 5x) and"
        f" {wall['unstaged'] / wall['on']:.2f}x the per-layer materialization's (target > 1x).",
    ]


def run_all(results: Path) -> list[str]:
    lines = []
    machine = results / "machine.txt"
    timings = results / "run_all.csv"
    if machine.exists():
        lines += ["Machine (`results/machine.txt`):", *code(printed(results, "machine", stop=None))]
    else:
        lines.append("The committed results have no `results/machine.txt`: they predate `run_all.sh` recording it.")
    if timings.exists():
        runs = rows(results, "run_all.csv")
        total = sum(int(r["seconds"]) for r in runs)
        lines.append(
            f"`bench/run_all.sh --full` from {runs[0]['started_utc']}: {total} s in all; "
            + ", ".join(f"{r['script']} {r['seconds']} s (exit {r['status']})" for r in runs)
            + "."
        )
    else:
        lines.append("The committed results have no `results/run_all.csv` (each script's time and exit status).")
    return lines


GENERATORS: dict[str, Callable[[Path], list[str]]] = {
    f.__name__: f
    for f in (
        approaches,
        hop_overhead,
        data_path,
        claim_latency,
        isolation,
        workload,
        mop_vs_keras,
        simulate_scale,
        scaling,
        autonomy,
        feature_transfer,
        run_all,
    )
}


def render(readme: str, results: Path) -> str:
    """``readme`` with every generated block rewritten from ``results``; each generator's block exactly once."""
    names = [m.group("name") for m in BLOCK.finditer(readme)]
    unknown = sorted(set(names) - set(GENERATORS))
    missing = sorted(set(GENERATORS) - set(names))
    twice = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or twice:
        raise ValueError(f"README blocks: unknown {unknown}, missing {missing}, repeated {twice}")

    def fill(match: re.Match[str]) -> str:
        body = "\n".join(GENERATORS[match.group("name")](results))
        return f"{match.group(1)}{body}\n{match.group(4)}"

    return BLOCK.sub(fill, readme)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if README.md is out of date")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="the results directory")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    wanted = render(current, args.results)
    if wanted == current:
        return 0
    if args.check:
        sys.stdout.writelines(
            difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), "README", "generated")
        )
        return 1
    args.readme.write_text(wanted)
    print(f"wrote {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
