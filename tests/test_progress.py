"""Progress off a terminal: a plain line now and then (gsmv.progress.LineBar), never tqdm's redraws; and the
stage lines of the run's log (gsmv.headlines)."""

from __future__ import annotations

import io
import json

import pytest

from gsmv import headlines, progress
from gsmv.artifacts import RunPaths
from gsmv.progress import LINE_GAP_S, QUIET_MAX_S, LineBar


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def lines_of(make, steps: int, secs_per_step: float) -> list[str]:
    out, clock = io.StringIO(), Clock()
    bar = make(out, clock)
    for _ in range(steps):
        clock.t += secs_per_step
        bar.update(1)
    bar.close()
    assert "\r" not in out.getvalue()
    return out.getvalue().splitlines()


def test_a_slow_bar_writes_a_line_per_tenth_and_none_at_the_end():
    got = lines_of(lambda f, c: LineBar(total=100, desc="finetune", unit="step", file=f, clock=c), 100, 10.0)
    assert len(got) == 9  # at 10%, 20%, ... 90%: the stage's own end line reports 100%
    assert got[0] == "  finetune: 10 of 100 steps (10%), 1 min 40 s elapsed, about 15 min 00 s left"
    assert got[-1].startswith("  finetune: 90 of 100 steps (90%)")


def test_a_fast_bar_writes_nothing():
    # All of it in less than LINE_GAP_S: a stage this quick is told by its start and end lines alone.
    assert lines_of(lambda f, c: LineBar(total=100, desc="x", file=f, clock=c), 100, LINE_GAP_S / 200) == []


def test_a_bar_without_total_still_shows_it_is_alive():
    got = lines_of(lambda f, c: LineBar(iter(range(10**6)), desc="search", unit="shard", file=f, clock=c), 10,
                   QUIET_MAX_S / 2)
    assert len(got) == 5 and got[0].startswith("  search: 2 shards, 5 min 00 s elapsed")


def test_postfix_resume_and_disable():
    out, clock = io.StringIO(), Clock()
    bar = LineBar(total=10, initial=5, desc="train-verifier", unit="step", file=out, clock=clock)
    bar.set_postfix(loss="0.6931", lr="1.00e-03")
    clock.t = 60.0
    bar.update(1)
    # Rates count the steps done in this process only (5 resumed ones took no time here).
    assert out.getvalue() == ("  train-verifier: 6 of 10 steps (60%), 1 min 00 s elapsed, about 4 min 00 s left, "
                              "loss=0.6931, lr=1.00e-03\n")
    quiet = io.StringIO()
    off = LineBar(total=10, file=quiet, clock=clock, disable=True)
    clock.t = 1000.0
    off.update(5)
    assert quiet.getvalue() == ""


def test_iterating_a_line_bar_yields_everything():
    assert list(LineBar(["a", "b", "c"], desc="x", file=io.StringIO())) == ["a", "b", "c"]


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_terminal_gets_tqdm_and_a_file_gets_lines(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr("sys.stderr", _Stream(tty=True))
    live = progress.bar(total=3, desc="x")
    assert isinstance(live, tqdm)
    live.close()
    monkeypatch.setattr("sys.stderr", _Stream(tty=False))
    assert isinstance(progress.bar(total=3, desc="x"), LineBar)


def test_library_bars_are_turned_off_in_a_log(monkeypatch):
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr("sys.stderr", _Stream(tty=False))
    hf_logging.enable_progress_bar()
    enable_progress_bars()
    try:
        progress.quiet_library_bars()
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
        import os

        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # for what is imported or started later
    finally:
        (hf_logging.enable_progress_bar if before[0] else hf_logging.disable_progress_bar)()
        (disable_progress_bars if before[1] else enable_progress_bars)()


# ---------------------------------------------------------------- the stage lines


def test_a_training_stage_ends_with_its_latest_losses(tmp_path):
    paths = RunPaths(tmp_path)
    recs = [{"stage": "finetune", "event": "start", "step": 0}, {"stage": "finetune", "step": 10, "loss": 9.0},
            {"stage": "finetune", "event": "end", "val_loss": 8.0},
            # run again (--redo): only the latest run counts
            {"stage": "finetune", "event": "start", "step": 0}, {"stage": "finetune", "step": 10, "loss": 2.5},
            {"stage": "sample", "split": "train", "loss": 99.0},
            {"stage": "finetune", "step": 20, "loss": 2.25}, {"stage": "finetune", "step": 20, "val_loss": 2.4},
            {"stage": "finetune", "event": "end", "val_loss": 2.375}]
    paths.metrics.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"stage": "finetune", "lo')
    assert headlines.finished("finetune", 12.34, paths, None) == \
        "[finetune] done in 12.3 s: train loss 2.25, val loss 2.375"


def test_evaluate_ends_with_the_headline_numbers(tmp_path):
    paths = RunPaths(tmp_path)
    metric = {"value": 0.25, "ci_low": 0.1, "ci_high": 0.4}
    paths.results.write_text(json.dumps({"kind": "run", "n_samples": 8, "n_problems": 40, "metrics": {
        "test@1": metric, "majority_vote": metric, "best_of_n": {**metric, "value": 0.5}, "oracle": None}}))
    assert headlines.finished("evaluate", 1.0, paths, {"run": "x"}) == (
        "[evaluate] done in 1.0 s: test@1 25.0%, majority vote 25.0%, best-of-8 50.0%, coverage absent "
        "(40 test problems)")


@pytest.mark.parametrize("labels", ['{"train": {"samples": 3}}', "not json", None])
def test_a_stage_line_falls_back_to_the_stage_summary(tmp_path, labels):
    # What the run folder holds is unreadable or incomplete: the line says what the stage returned, no error.
    paths = RunPaths(tmp_path)
    if labels is not None:
        (tmp_path / "labels.json").write_text(labels)
    assert headlines.finished("label", 0.2, paths, {"train_samples": 3}) == "[label] done in 0.2 s: train_samples=3"
