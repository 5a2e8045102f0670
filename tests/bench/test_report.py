"""bench/report.py: bench/README.md's figures are generated from bench/results/, and follow them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import report

RESULTS = report.RESULTS_DIR


def doctored(tmp_path: Path) -> Path:
    """A copy of the committed results in which resnet50's hop share is 9% and the flood costs the victim 3.5x."""
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    hops = results / "hop_overhead.csv"
    with open(hops, newline="") as file:
        models = list(csv.DictReader(file))
    for model in models:
        if model["model"] == "resnet50":
            model["hop_share"] = "0.09000"
    with open(hops, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(models[0]))
        writer.writeheader()
        writer.writerows(models)
    isolation = results / "isolation.csv"
    isolation.write_text(isolation.read_text().replace("beside a flood,51.88,1.896", "beside a flood,95.76,3.500"))
    return results


def test_the_committed_readme_is_what_the_committed_results_give() -> None:
    readme = report.README.read_text()
    assert report.render(readme, RESULTS) == readme, "bench/README.md is out of date: run bench/report.py"
    assert report.main(["--check"]) == 0


def test_a_doctored_result_changes_the_readme(tmp_path: Path) -> None:
    readme = report.README.read_text()
    generated = report.render(readme, doctored(tmp_path))
    assert generated != readme
    assert "to 9.00% (resnet50)" in generated and "to 9.00% (resnet50)" not in readme
    assert "| beside a flood | 95.8 | 3.50x |" in generated
    assert report.main(["--check", "--results", str(tmp_path / "results")]) == 1
    # Only the generated blocks changed: the text around them is the same.
    assert report.BLOCK.sub("", generated) == report.BLOCK.sub("", readme)


def test_a_missing_results_file_fails(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    (results / "scaling.txt").unlink()
    with pytest.raises(FileNotFoundError, match="scaling.txt"):
        report.render(report.README.read_text(), results)


def test_every_block_once_and_no_other() -> None:
    readme = report.README.read_text()
    with pytest.raises(ValueError, match=r"missing \['isolation'\]"):
        report.render(readme.replace("<!-- report: isolation -->", "<!-- isolation -->"), RESULTS)
    with pytest.raises(ValueError, match=r"unknown \['speed'\]"):
        report.render(readme + "<!-- report: speed -->\n1.5x\n<!-- /report: speed -->\n", RESULTS)
    with pytest.raises(ValueError, match=r"repeated \['scaling'\]"):
        report.render(readme + "<!-- report: scaling -->\n<!-- /report: scaling -->\n", RESULTS)
