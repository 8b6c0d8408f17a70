"""Plots and report.md: PNGs written and not blank, training curves read defensively, the report stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_run import build_run, write_reference_data
from PIL import Image

from gsmv import evaluate, report
from gsmv.artifacts import RunPaths
from gsmv.errors import GsmvError
from gsmv.report import plots


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 2000
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img.std() > 5  # lines, labels and bands, not an empty canvas


@pytest.fixture
def results(tiny_cfg):
    build_run(tiny_cfg)
    return evaluate.main(tiny_cfg)


def test_scaling_and_top_k_plots(results, tmp_path):
    assert_png(plots.plot_scaling(results, tmp_path / "a" / "scaling.png"))
    assert_png(plots.plot_top_k(results, tmp_path / "top_k.png"))
    no_greedy = {**results, "metrics": {**results["metrics"], "test@1": None}}
    assert_png(plots.plot_scaling(no_greedy, tmp_path / "scaling2.png"))


def test_confidence_plot_and_report_sections(results, tiny_cfg, tmp_path):
    assert_png(plots.plot_confidence(results, tmp_path / "confidence.png"))
    sel = results["selective"]
    assert set(sel["signals"]) == {"verifier", "vote_share"} and sel["coverage"][-1] == 1.0
    # answering everything is majority vote over all samples, whatever the signal
    for cur in sel["signals"].values():
        assert cur["value"][-1] == pytest.approx(results["metrics"]["majority_vote"]["value"], abs=1e-6)
    cal = results["calibration"]
    assert sum(b["count"] for b in cal["bins"]) == results["n_problems"] * results["n_samples"]
    md = report.build_markdown(tiny_cfg, results, None, {"confidence": tmp_path / "confidence.png"},
                               {tiny_cfg.name: ({}, results)})
    assert "## Confidence you can act on" in md and "vote share" in md and f"ECE {cal['ece']:.3f}" in md
    assert "## Step by step" in md


def test_budget_plot_and_report_section(results, tiny_cfg, tmp_path):
    cur = {"param": "N", "x": [1, 4], "tokens": [60.0, 240.0], "scored_tokens": [None, None], "value": [0.2, 0.3],
           "ci_low": [0.1, 0.2], "ci_high": [0.3, 0.4]}
    res = {**results, "budget": {"problems": 5, "unit": "generated tokens per problem (mean)", "strategies": {
        "majority_vote": cur, "search": {**cur, "param": "K", "x": [1, 2], "scored_tokens": [500.0, 900.0]}}}}
    assert_png(plots.plot_budget(res, tmp_path / "budget.png"))
    md = report.build_markdown(tiny_cfg, res, None, {"budget": tmp_path / "budget.png"}, {})
    assert "## Equal-budget comparison" in md and "![accuracy vs generated tokens](plots/budget.png)" in md
    assert "| search | K=2 | 240 | 900 | 30.0 [20.0, 40.0] |" in md


def test_compare_and_score_plots(results, tmp_path):
    other = json.loads(json.dumps(results))
    other["curves"]["best_of_n"]["value"] = [v * 0.9 for v in other["curves"]["best_of_n"]["value"]]
    assert_png(plots.plot_compare({"token": results, "solution": other}, tmp_path / "compare.png"))
    rng = np.random.default_rng(0)
    assert_png(plots.plot_score_hist(rng.random((10, 8)), rng.random((10, 8)) < 0.5, tmp_path / "scores.png"))


def test_training_series_reads_metrics_defensively():
    records = [
        {"stage": "finetune", "event": "start", "step": 0},
        {"stage": "finetune", "step": 10, "loss": 2.0, "lr": 1e-3},
        {"stage": "finetune", "step": 20, "loss": "nan?", "val_loss": 1.5},
        {"stage": "finetune", "loss": 1.0},  # no step: its position
        {"stage": "finetune", "event": "end", "step": 20, "val_loss": 1.5},  # repeats the last val
        {"stage": "train-verifier", "step": 5, "loss": 0.5, "train_value_loss": 0.2, "train_tokens": 9},
        {"stage": "train-verifier", "step": 5, "val_auc": 0.7, "val_loss": float("nan")},
        {"stage": "sample", "step": 1, "loss": 9.0},
        "not a record",
    ]
    s = plots.training_series(records)
    assert s["finetune"]["train loss"] == ([10.0, 3.0], [2.0, 1.0])
    assert s["finetune"]["val loss"] == ([20.0], [1.5])
    assert set(s["train-verifier"]) == {"train loss", "train value loss", "val auc"}
    assert plots.plot_training([], "unused.png") is None


def test_training_plot(tiny_cfg, tmp_path):
    from fake_run import log_training

    from gsmv.artifacts import read_metrics

    log_training(tiny_cfg)
    assert_png(plots.plot_training(read_metrics(RunPaths(tiny_cfg.run_dir).metrics), tmp_path / "training.png"))


def test_report_main_writes_markdown_plots_and_reference_row(tiny_cfg, tmp_path, tiny_data_dir):
    tiny_cfg.data.dir = str(write_reference_data(tmp_path / "data", tiny_data_dir))
    build_run(tiny_cfg)
    paths = RunPaths(tiny_cfg.run_dir)
    # The report reads results.json and never evaluates: without it, one line that says what to run.
    with pytest.raises(GsmvError, match=r"^\S*results\.json: file not found \(run `gsmv evaluate` first\)$"):
        report.main(tiny_cfg)
    assert not paths.report_md.exists()
    evaluate.main(tiny_cfg)
    out = report.main(tiny_cfg)
    assert paths.report_html.exists()
    for name in ("scaling", "top_k", "scores", "training", "confidence"):
        assert_png(paths.plots / f"{name}.png")
    assert out["plots"] == 5
    md = paths.report_md.read_text()
    res = json.loads(paths.results.read_text())
    best, lo = res["metrics"]["best_of_n"]["value"], res["metrics"]["best_of_n"]["ci_low"]
    assert f"| verifier best-of-12 | {100 * best:.1f}% | [{100 * lo:.1f}," in md
    # The 4-line reference file: 6B finetuning 1/4 correct, 175B verification 3/4.
    assert "| paper 6B finetuning (test@1) | 25.0% |" in md
    assert "| paper 175B verification (best-of-100) | 75.0% |" in md
    for name in ("scaling", "top_k", "scores", "training"):
        assert f"(plots/{name}.png)" in md
    assert "Comparison of runs" not in md


def _other_run(tiny_cfg, tmp_path, name: str, *overrides: str):
    """A second fake run beside tiny_cfg's (its own samples and scores), not evaluated yet."""
    from gsmv.config import load_config

    other = load_config(None, [f"data.dir={tiny_cfg.data.dir}", f"out_dir={tmp_path}", f"name={name}",
                               "evaluate.bootstrap=20", *overrides])
    build_run(other, seed=1)
    return other


def test_report_compares_runs_and_rejects_a_missing_one(tiny_cfg, tmp_path):
    other = _other_run(tiny_cfg, tmp_path, "solution", "verifier.level=solution")
    (RunPaths(other.run_dir).config).write_text("name: solution\nverifier:\n  level: solution\n  lm_weight: 0.0\n")
    evaluate.main(other)
    build_run(tiny_cfg)
    evaluate.main(tiny_cfg)
    tiny_cfg.report.compare = [str(other.run_dir)]
    report.main(tiny_cfg)
    paths = RunPaths(tiny_cfg.run_dir)
    assert_png(paths.plots / "compare.png")
    md = paths.report_md.read_text()
    assert "## Comparison of runs" in md
    assert "| solution |  | solution | 0.0 |" in md and "| t |" in md
    assert "train_size.png" not in md  # neither run logged its generator's training-set size
    tiny_cfg.report.compare = [str(tmp_path / "nope")]
    before = paths.report_md.read_text()
    with pytest.raises(GsmvError, match=r"nope/results.json: file not found"):
        report.main(tiny_cfg)
    assert paths.report_md.read_text() == before


def test_report_plots_finetuning_and_verification_by_training_set_size(tiny_cfg, tmp_path):
    # Paper Fig. 5: compared runs whose generators trained on different numbers of problems (read from each
    # run's finetune start event) get a training-set-size figure and a column in the comparison table.
    from gsmv.artifacts import MetricsLog

    small = _other_run(tiny_cfg, tmp_path, "small")
    MetricsLog(RunPaths(small.run_dir).metrics, "finetune").log(event="start", step=0, examples=250)
    evaluate.main(small)
    build_run(tiny_cfg)
    MetricsLog(RunPaths(tiny_cfg.run_dir).metrics, "finetune").log(event="start", step=0, examples=1000)
    evaluate.main(tiny_cfg)
    tiny_cfg.report.compare = [str(small.run_dir)]
    report.main(tiny_cfg)
    paths = RunPaths(tiny_cfg.run_dir)
    assert_png(paths.plots / "train_size.png")
    md = paths.report_md.read_text()
    assert "![training-set size](plots/train_size.png)" in md
    assert "| small | 250 |" in md and "| t | 1000 |" in md
    # The points: one per size, each that run's results.
    runs = report._compare(tiny_cfg, json.loads(paths.results.read_text()))
    points = report.train_size_points(runs)
    assert sorted(points) == [250, 1000]
    assert points[250]["metrics"]["test@1"] == json.loads(RunPaths(small.run_dir).results.read_text())["metrics"]["test@1"]


def test_score_histogram_of_one_class_warns_nothing(tmp_path):
    import warnings

    from gsmv.report import plots

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in divide" would fail here
        out = plots.plot_score_hist(np.array([[0.2, 0.4], [0.5, 0.9]]), np.zeros((2, 2), bool), tmp_path / "s.png")
    assert Image.open(out).size[0] > 100
