"""The score stage: the verifier's value for every sampled solution.

For each sample shard samples/<split>/shard-NNNNN.parquet it writes
scores/<split>/shard-NNNNN.parquet with columns problem_id, sample_idx,
score (float32: the value at the solution's final token, what best-of-N ranks by)
and token_values (list<float32>: the value after each of the sample's tokens, aligned
with its `tokens` column, for the HTML viewer; empty lists when
cfg.score.keep_token_values is off).

The verifier reads format_prompt(question), the sample's own token ids and, when the
sample stopped at EOS, the EOS token (its final token then), exactly as in training. Shards are independent: a finished shard is skipped (resume),
and under `accelerate launch` / `torchrun` sample shard i is scored by rank
i % world_size.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from gsmv import progress
from gsmv.artifacts import (
    REFERENCE_SPLIT,
    Damage,
    MetricsLog,
    RunPaths,
    list_shards,
    listed_shards,
    parquet_rows,
    read_shard,
    write_parquet,
)
from gsmv.config import RunConfig
from gsmv.errors import GsmvError
from gsmv.models.verifier import input_limit, load_verifier, pad_id_of, prompt_ids, sample_solution_ids
from gsmv.runtime import partial_state, pick_device, pick_dtype, setup_threads

SCORE_SCHEMA = pa.schema([
    ("problem_id", pa.string()),
    ("sample_idx", pa.int32()),
    ("score", pa.float32()),
    ("token_values", pa.list_(pa.float32())),
])


def sequences_for_shard(path, prompts: dict[str, list[int]], split: str, tokenizer: Any,
                        reads: str = "tokens") -> tuple[pa.Table, list, list, list]:
    """The shard's ids/indices table, prompt + solution sequences, solution start positions and the
    number of sampled tokens of each row (the verifier also reads EOS after a finished sample). A verifier that
    reads text (another tokenizer than the generator's) gets each sample's text in its own ids, and no
    per-token values (they would not align with the sample's tokens): n_sampled is 0."""
    # The text column only for a verifier that reads it: scoring is on the hot path and texts are long.
    t = read_shard(path, ("problem_id", "sample_idx", "tokens", "finished") + (("text",) if reads == "text" else ()))
    texts = t.column("text").to_pylist() if reads == "text" else [None] * t.num_rows
    seqs, starts, n_sampled = [], [], []
    cols = (t.column(c).to_pylist() for c in ("problem_id", "tokens", "finished"))
    for i, (pid, toks, finished, text) in enumerate(zip(*cols, texts, strict=True)):
        if pid not in prompts:
            raise GsmvError(f"{path}: row {i}: problem_id {pid!r} is not in the '{REFERENCE_SPLIT[split]}' split")
        p = prompts[pid]
        seqs.append(p + sample_solution_ids(reads, tokenizer, toks, finished, text))
        starts.append(len(p))
        n_sampled.append(len(toks or []) if reads == "tokens" else 0)
    return t, seqs, starts, n_sampled


def main(cfg: RunConfig, split: str = "test") -> dict:
    """Score every sample shard of `split` not scored yet; returns a small summary."""
    from gsmv.data.tasks import load_split

    if split not in REFERENCE_SPLIT:
        raise GsmvError(f"score: unknown split '{split}': valid splits are {', '.join(REFERENCE_SPLIT)}")
    state = partial_state(cfg)
    setup_threads(cfg)
    paths = RunPaths(cfg.run_dir)
    sample_shards = list_shards(paths.samples(split))
    if not sample_shards:
        raise GsmvError(f"{paths.samples(split)}: no sample shards to score (run sample {split} first)")
    out_dir = paths.scores(split)
    mine = [p for i, p in enumerate(sample_shards) if i % state.num_processes == state.process_index]
    todo = [p for p in mine if not (out_dir / p.name).exists()]
    n_samples = n_tokens = 0
    t0 = time.time()
    if todo:
        device = pick_device(cfg)
        verifier, tok = load_verifier(paths.verifier_final, dtype=pick_dtype(cfg, device), device=device)
        pad_id = pad_id_of(tok)
        prompts = {p.id: prompt_ids(tok, p.question) for p in load_split(cfg, REFERENCE_SPLIT[split])}
        # The longest input the verifier trained and was validated on (train-verifier cuts the same way).
        limit = input_limit(verifier.lm, cfg.verifier.max_len)
        bar = progress.bar(todo, desc=f"score {split} (rank {state.process_index})", unit="shard",
                   disable=not state.is_local_main_process)
        for path in bar:
            t, seqs, starts, n_sampled = sequences_for_shard(path, prompts, split, tok, verifier.reads)
            # A shard holds whole problems, so each problem's samples read its prompt once.
            res = verifier.score_sequences(seqs, starts, batch_size=cfg.score.batch_size, pad_id=pad_id,
                                           max_len=limit, share_prompts=True)
            keep = cfg.score.keep_token_values
            table = pa.table({
                "problem_id": t.column("problem_id").cast(pa.string()),
                "sample_idx": t.column("sample_idx").cast(pa.int32()),
                "score": pa.array(np.array([s for s, _ in res], dtype=np.float32)),
                # Aligned with the sample's own tokens (the EOS the verifier also read has no text).
                "token_values": pa.array([v[:n] if keep else np.zeros(0, np.float32)
                                          for (_, v), n in zip(res, n_sampled, strict=True)],
                                         type=pa.list_(pa.float32())),
            }, schema=SCORE_SCHEMA)
            write_parquet(out_dir / path.name, table)
            n_samples += len(seqs)
            n_tokens += sum(len(s) for s in seqs)
    secs = time.time() - t0
    if state.is_main_process and todo:
        MetricsLog(paths.metrics, "score").log(split=split, rank=0, shards=len(todo), samples=n_samples,
                                               tokens=n_tokens, seconds=round(secs, 2),
                                               samples_per_s=round(n_samples / max(secs, 1e-9), 2))
    state.wait_for_everyone()
    return {"split": split, "shards": len(sample_shards), "scored_here": len(todo), "samples_here": n_samples}


def check_outputs(paths: RunPaths, cfg: RunConfig, split: str = "test") -> list[Damage]:
    """What is damaged in finished scores (the pipeline's check; main writes no done.json): a readable score shard
    for every sample shard, with as many rows."""
    out: list[Damage] = []
    for s in listed_shards(paths.samples(split)):
        p = paths.scores(split) / s.name
        rows = parquet_rows(p)
        want = parquet_rows(s)  # None when the sample shard is damaged: the sample stage's check says so
        if not p.exists():
            out.append((None, f"{p} is missing"))
        elif rows is None:
            out.append((p, f"{p} is not readable Parquet"))
        elif want is not None and rows != want:
            out.append((p, f"{p} holds {rows} scores for {want} samples"))
    return out
