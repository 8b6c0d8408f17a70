"""Build a run folder's sample and score shards by hand (the schemas of the brief), for evaluation tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from gsmv.artifacts import MetricsLog, RunPaths, shard_path, write_parquet
from gsmv.config import RunConfig
from gsmv.data.tasks import load_split

SAMPLE_SCHEMA = pa.schema([
    ("problem_id", pa.string()), ("sample_idx", pa.int32()), ("text", pa.string()),
    ("tokens", pa.list_(pa.int32())), ("n_tokens", pa.int32()), ("final_answer", pa.string()),
    ("is_correct", pa.bool_()), ("calc_calls", pa.int32()), ("forced", pa.list_(pa.bool_())),
    ("finished", pa.bool_()),
])
SCORE_SCHEMA = pa.schema([
    ("problem_id", pa.string()), ("sample_idx", pa.int32()), ("score", pa.float32()),
    ("token_values", pa.list_(pa.float32())),
])


def _text(problem, answer: str | None, j: int) -> str:
    body = problem.solution.rsplit("####", 1)[0]
    if answer is None:
        return body.rstrip() + f"\nI am not sure {j}"
    return f"{body}#### {answer}"


def _write(folder: Path, rows: list[dict], schema: pa.Schema, shards: int) -> None:
    bounds = np.linspace(0, len(rows), shards + 1).astype(int)
    for i in range(shards):
        part = rows[bounds[i]:bounds[i + 1]]
        write_parquet(shard_path(folder, i), pa.Table.from_pylist(part, schema=schema))


def write_fake_run(cfg: RunConfig, *, correct: np.ndarray, scores: np.ndarray | None = None,
                   answers: list[list[str | None]] | None = None, greedy: np.ndarray | None = None,
                   tokenizer=None, shards: int = 2) -> list:
    """Write samples/test (+ scores/test, samples/test_greedy) for the first P test problems of cfg.

    correct [P, n]: which samples are right; answers default to the reference for right samples and
    a wrong number (one per sample, so they never tie) otherwise; scores [P, n] default to none written.
    Returns the problems used.
    """
    problems = load_split(cfg, "test")
    P, n = correct.shape
    assert P == len(problems), f"cfg has {len(problems)} test problems, correct has {P} rows"
    paths = RunPaths(cfg.run_dir)
    rows, srows = [], []
    for p, prob in enumerate(problems):
        for j in range(n):
            if answers is not None:
                a = answers[p][j]
            else:
                a = prob.answer if correct[p, j] else str(int(prob.answer.split(".")[0]) + 1000 + j)
            text = _text(prob, a, j)
            toks = tokenizer.encode(text, add_special_tokens=False) if tokenizer is not None else [ord(ch) % 97
                                                                                                     for ch in text]
            rows.append({"problem_id": prob.id, "sample_idx": j, "text": text, "tokens": toks,
                         "n_tokens": len(toks), "final_answer": a, "is_correct": bool(correct[p, j]),
                         "calc_calls": text.count("<<"), "forced": [False] * len(toks), "finished": True})
            if scores is not None:
                vals = np.linspace(0.5, float(scores[p, j]), num=len(toks)).astype(np.float32).tolist()
                srows.append({"problem_id": prob.id, "sample_idx": j, "score": float(scores[p, j]),
                              "token_values": vals})
    # Shards are written in a shuffled row order: evaluation must not rely on it.
    perm = np.random.default_rng(0).permutation(len(rows))
    _write(paths.samples("test"), [rows[i] for i in perm], SAMPLE_SCHEMA, shards)
    if scores is not None:
        _write(paths.scores("test"), [srows[i] for i in perm[::-1]], SCORE_SCHEMA, shards)
    if greedy is not None:
        grows = []
        for p, prob in enumerate(problems):
            a = prob.answer if greedy[p] else str(int(prob.answer.split(".")[0]) + 7)
            text = _text(prob, a, 0)
            grows.append({"problem_id": prob.id, "sample_idx": 0, "text": text, "tokens": [1, 2],
                          "n_tokens": 2, "final_answer": a, "is_correct": bool(greedy[p]), "calc_calls": 0,
                          "forced": [False, False], "finished": True})
        _write(paths.samples("test_greedy"), grows, SAMPLE_SCHEMA, 1)
    return problems


N_SAMPLES = 12


def make_design(P: int, n: int = N_SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Problems from unsolvable to easy; a verifier that is informative but makes mistakes."""
    rng = np.random.default_rng(seed)
    correct = rng.random((P, n)) < np.linspace(-0.2, 1.0, P)[:, None]
    scores = (0.7 * rng.random((P, n)) + 0.3 * correct).astype(np.float32)
    return correct, scores


def log_training(cfg: RunConfig) -> None:
    paths = RunPaths(cfg.run_dir)
    ft = MetricsLog(paths.metrics, "finetune")
    ft.log(event="start", step=0, total_steps=40)
    for step in range(5, 45, 5):
        ft.log(step=step, epoch=step / 20, loss=3.0 / step ** 0.3, lr=1e-3, tokens_per_s=100.0)
        if step % 20 == 0:
            ft.log(step=step, epoch=step / 20, val_loss=3.2 / step ** 0.3)
    ft.log(event="end", step=40, val_loss=1.0)
    vf = MetricsLog(paths.metrics, "train-verifier")
    for step in range(5, 25, 5):
        vf.log(step=step, loss=1.0 / step, train_value_loss=0.25 - step / 200, train_lm_loss=1.5)
        vf.log(step=step, val_loss=1.1 / step, val_auc=0.5 + step / 100)


def build_run(cfg: RunConfig, tokenizer=None, seed: int = 0, greedy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    P = len(load_split(cfg, "test"))
    correct, scores = make_design(P, seed=seed)
    write_fake_run(cfg, correct=correct, scores=scores, greedy=correct[:, 0] if greedy else None,
                   tokenizer=tokenizer)
    if tokenizer is not None:
        tokenizer.save_pretrained(RunPaths(cfg.run_dir).generator_final)
    log_training(cfg)
    return correct, scores


def write_reference_data(folder: Path, tiny_data_dir: Path) -> Path:
    """The tiny GSM8K files plus a 4-line example_model_solutions.jsonl, as the real data folder has."""
    shutil.copytree(tiny_data_dir, folder)
    lines = []
    for i in range(4):
        rec = {"question": f"q{i}", "ground_truth": "A: 1"}
        rec.update({m: {"is_correct": i < k, "solution": "A: 1"} for m, k in
                    (("6b_finetuning", 1), ("6b_verification", 2), ("175b_finetuning", 2), ("175b_verification", 3))})
        lines.append(json.dumps(rec))
    (folder / "example_model_solutions.jsonl").write_text("\n".join(lines) + "\n")
    return folder
