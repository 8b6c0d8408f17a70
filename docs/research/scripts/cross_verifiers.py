"""One run's verifier on another run's test samples (issue 45's cross table): best-of-N, majority and
within-problem AUC on the first N samples of every test problem, each with a 95% bootstrap CI over problems
(the AUC's over the problems with both right and wrong samples).

    python docs/research/scripts/cross_verifiers.py --samples runs/synth-smol-gen --verifier runs/synth --n 8 \
        --out docs/research/pretrained-generator/cross-smolgen-samples-1m-verifier.json

The two runs must share the test problems (the same `synth` test split). --samples == --verifier reads the
run's own score shards (what its evaluate stage ranked by); otherwise the verifier scores the samples here as
the score stage does (its own tokenizer reads the samples' text when the vocabularies differ). Test only: this
reports, it selects nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from gsmv.artifacts import RunPaths, list_shards, read_shards
from gsmv.config import load_config
from gsmv.data.tasks import load_split
from gsmv.metrics import auc, auc_within, best_of_n, bootstrap_ci, encode_answers, majority_vote
from gsmv.models.verifier import input_limit, load_verifier, pad_id_of, prompt_ids, shares_vocabulary
from gsmv.score import sequences_for_shard
from gsmv.token_text import load_tokenizer


def own_scores(run: Path, n: int) -> dict[tuple[str, int], float]:
    t = read_shards(RunPaths(run).scores("test"), ["problem_id", "sample_idx", "score"]).table.to_pylist()
    return {(r["problem_id"], r["sample_idx"]): r["score"] for r in t if r["sample_idx"] < n}


def cross_scores(samples_run: Path, verifier_run: Path, n: int, batch_size: int) -> dict[tuple[str, int], float]:
    cfg = load_config(RunPaths(verifier_run).config, [f"out_dir={verifier_run.parent}"])
    ver, tok = load_verifier(RunPaths(verifier_run).verifier_final, device="cpu")
    ver.eval()
    if not shares_vocabulary(load_tokenizer(samples_run), tok):
        ver.reads = "text"
    prompts = {p.id: prompt_ids(tok, p.question) for p in load_split(cfg, "test")}
    limit, pad = input_limit(ver.lm, cfg.verifier.max_len), pad_id_of(tok)
    out = {}
    for path in list_shards(RunPaths(samples_run).samples("test")):
        t, seqs, starts, _ = sequences_for_shard(path, prompts, "test", tok, ver.reads)
        ids, idx = t.column("problem_id").to_pylist(), t.column("sample_idx").to_pylist()
        keep = [i for i, k in enumerate(idx) if k < n]
        res = ver.score_sequences([seqs[i] for i in keep], [starts[i] for i in keep], batch_size=batch_size,
                                  pad_id=pad, max_len=limit, share_prompts=True)
        out.update({(ids[i], idx[i]): s for i, (s, _) in zip(keep, res, strict=True)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", required=True, help="the run whose test samples are ranked")
    ap.add_argument("--verifier", required=True, help="the run whose verifier/final ranks them")
    ap.add_argument("--n", type=int, default=8, help="the first N samples of every test problem")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    samples_run, verifier_run = Path(a.samples), Path(a.verifier)
    t0 = time.time()
    same = samples_run.resolve() == verifier_run.resolve()
    scores = own_scores(samples_run, a.n) if same else cross_scores(samples_run, verifier_run, a.n, a.batch_size)
    t = read_shards(RunPaths(samples_run).samples("test"), ["problem_id", "sample_idx", "is_correct", "final_answer"])
    rows = t.table.filter(pc.less(t.table.column("sample_idx"), a.n)).to_pylist()
    by: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["problem_id"], r["sample_idx"])):
        by.setdefault(r["problem_id"], []).append(r)
    problems = [p for p, v in by.items() if len(v) == a.n]
    if len(problems) != len(by):
        raise SystemExit(f"{len(by) - len(problems)} problems have fewer than {a.n} samples")
    C = np.array([[r["is_correct"] for r in by[p]] for p in problems], dtype=bool)
    S = np.array([[scores[(p, r["sample_idx"])] for r in by[p]] for p in problems], dtype=np.float64)
    codes, code_correct = encode_answers([[r["final_answer"] for r in by[p]] for p in problems], C)
    per = np.stack([best_of_n(S, C, [a.n])[0], majority_vote(codes, code_correct), C.mean(axis=1),
                    C.any(axis=1).astype(float)])
    lo, hi = bootstrap_ci(per, a.resamples, seed=0)
    names = [f"best_of_{a.n}", f"majority_at_{a.n}", "sample_accuracy", f"pass_at_{a.n}"]
    per_auc = np.array([v for s, c in zip(S, C, strict=True) if (v := auc(s, c)) is not None])
    auc_lo, auc_hi = bootstrap_ci(per_auc[None], a.resamples, seed=0)
    both = len(per_auc)
    out = {"samples": str(samples_run), "verifier": str(verifier_run), "n": a.n, "problems": len(problems),
           "scored_here": not same, "seconds": round(time.time() - t0, 1),
           "within_auc": auc_within(list(S), list(C)), "within_auc_ci": [float(auc_lo[0]), float(auc_hi[0])],
           "problems_with_both_labels": both,
           **{k: {"value": float(v.mean()), "ci": [float(lo[i]), float(hi[i])]}
              for i, (k, v) in enumerate(zip(names, per, strict=True))}}
    greedy_dir = RunPaths(samples_run).samples("test_greedy")
    if list_shards(greedy_dir):  # best-of-N against the same run's greedy answer, paired over problems
        g = {r["problem_id"]: r["is_correct"]
             for r in read_shards(greedy_dir, ["problem_id", "is_correct"]).table.to_pylist()}
        d = per[0] - np.array([float(g[p]) for p in problems])
        lo, hi = bootstrap_ci(d[None], a.resamples, seed=0)
        out[f"best_of_{a.n}_minus_greedy"] = {"value": float(d.mean()), "ci": [float(lo[0]), float(hi[0])]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
