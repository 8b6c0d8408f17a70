"""The label stage: grade every sampled solution by its final answer.

The sampler already fills `is_correct`; this stage re-grades every sample shard of
train / val / test / test_greedy against the references with
`gsmv.data.answers.is_correct` (so a fix to answer parsing relabels old samples
without resampling), rewrites a shard (atomically) only where a label changed, and
writes run_dir/labels.json with, per split: problems, samples, correct, accuracy
and coverage (the share of problems with at least one correct sample, the ceiling
of any reranker). For a task with step-level truth (the synthetic task) it also checks every
sample's steps (gsmv.data.tasks.first_wrong_step) and records wrong_steps (share of samples
with a wrong step) and false_positive_rate (share of correct samples with a wrong step: a
right answer reached by wrong reasoning, which an outcome label calls correct).

All shards are graded before anything is written, so a bad shard (a problem id
that is not in its split, a missing column) stops the stage with one error line
and leaves every file as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from gsmv.artifacts import (
    REFERENCE_SPLIT,
    RunPaths,
    atomic_write_json,
    list_shards,
    read_shard,
    write_parquet,
)
from gsmv.config import RunConfig
from gsmv.errors import GsmvError

SPLITS = ("train", "val", "test", "test_greedy")
LABEL_COLUMNS = ("problem_id", "text", "is_correct", "final_answer")


@dataclass
class GradedShard:
    path: Path
    problem_ids: list[str]
    correct: np.ndarray  # bool, the new labels
    changed: int  # rows whose stored label or final answer differs (null counts as different)
    wrong_step: np.ndarray | None = None  # bool: the sample has a wrong step (None: not checked)
    final_answers: list[str | None] | None = None  # re-extracted, so votes and labels never disagree


def grade_shard(path: Path, answers: dict[str, str], split: str,
                values: dict[str, frozenset[str]] | None = None) -> GradedShard:
    """Grade one sample shard; GsmvError naming the file and row for an unknown problem id.
    With `values` (problem id → the reference's intermediate values) also check every sample's steps."""
    from gsmv.data.answers import extract_answer, is_correct
    from gsmv.data.tasks import first_wrong_step

    t = read_shard(path, LABEL_COLUMNS)
    pids = t.column("problem_id").to_pylist()
    texts = t.column("text").to_pylist()
    old = t.column("is_correct").to_pylist()
    old_answers = t.column("final_answer").to_pylist()
    new_answers = [extract_answer(text or "") for text in texts]
    new = np.zeros(len(pids), dtype=bool)
    for i, (pid, text) in enumerate(zip(pids, texts, strict=True)):
        if pid not in answers:
            raise GsmvError(f"{path}: row {i}: problem_id {pid!r} is not in the '{REFERENCE_SPLIT[split]}' split "
                            f"({len(answers)} problems; were these samples made with other data settings?)")
        new[i] = is_correct(text or "", answers[pid])
    changed = sum(o is None or bool(o) != bool(n) or oa != na
                  for o, n, oa, na in zip(old, new, old_answers, new_answers, strict=True))
    wrong = None
    if values is not None:
        wrong = np.array([first_wrong_step(t or "", values[pid]) is not None for pid, t in zip(pids, texts, strict=True)],
                         dtype=bool)
    return GradedShard(path, pids, new, changed, wrong, new_answers)


def rewrite_labels(shard: GradedShard) -> None:
    """Replace the shard's is_correct and final_answer columns, keeping every other column and the order."""
    t = read_shard(shard.path)
    i = t.schema.get_field_index("is_correct")
    t = t.set_column(i, pa.field("is_correct", pa.bool_()), pa.array(shard.correct, type=pa.bool_()))
    if shard.final_answers is not None:
        i = t.schema.get_field_index("final_answer")
        t = t.set_column(i, pa.field("final_answer", pa.string()), pa.array(shard.final_answers, type=pa.string()))
    write_parquet(shard.path, t)


def split_stats(shards: list[GradedShard]) -> dict:
    per_problem: dict[str, bool] = {}
    n = correct = changed = 0
    for s in shards:
        n += len(s.problem_ids)
        correct += int(s.correct.sum())
        changed += s.changed
        for pid, c in zip(s.problem_ids, s.correct, strict=True):
            per_problem[pid] = per_problem.get(pid, False) or bool(c)
    problems = len(per_problem)
    stats = {
        "problems": problems,
        "samples": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "coverage": sum(per_problem.values()) / problems if problems else 0.0,
        "relabeled": changed,
        "shards": len(shards),
    }
    if shards and all(s.wrong_step is not None for s in shards):
        wrong = np.concatenate([s.wrong_step for s in shards])
        ok = np.concatenate([s.correct for s in shards])
        stats["wrong_steps"] = float(wrong.mean()) if n else 0.0
        stats["false_positive_rate"] = float(wrong[ok].mean()) if ok.any() else 0.0
        stats["strict_accuracy"] = float((ok & ~wrong).mean()) if n else 0.0
    return stats


def main(cfg: RunConfig, splits: tuple[str, ...] = SPLITS, out: str = "labels.json") -> dict:
    """Grade all sample shards; rewrite changed labels; write labels.json; return
    {"<split>_samples", "<split>_accuracy", "<split>_coverage"} for each split with samples.

    Runs on the main process only (the pipeline marks it so); it uses no collectives."""
    from gsmv.data.tasks import get_task, load_split, reference_values

    paths = RunPaths(cfg.run_dir)
    step_truth = get_task(cfg).step_truth
    graded: dict[str, list[GradedShard]] = {}
    references: dict[str, dict[str, str]] = {}
    values: dict[str, dict[str, frozenset[str]]] = {}
    for split in splits:
        shards = list_shards(paths.samples(split))
        if not shards:
            continue
        ref = REFERENCE_SPLIT[split]
        if ref not in references:
            problems = load_split(cfg, ref)
            references[ref] = {p.id: p.answer for p in problems}
            if step_truth:
                values[ref] = {p.id: reference_values(p) for p in problems}
        graded[split] = [grade_shard(p, references[ref], split, values[ref] if step_truth else None)
                         for p in shards]
    if not graded:
        raise GsmvError(f"{paths.root / 'samples'}: no sample shards to label (run the sample stage first)")
    for shards in graded.values():
        for s in shards:
            if s.changed:
                rewrite_labels(s)
    labels = {split: split_stats(shards) for split, shards in graded.items()}
    atomic_write_json(paths.root / out, labels)
    # A flat summary for the CLI's one-line report; labels.json keeps the per-split records.
    return {f"{split}_{k}": rec[k] for split, rec in labels.items()
            for k in ("samples", "accuracy", "coverage", "false_positive_rate") if k in rec}
