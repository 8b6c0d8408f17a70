"""The sample stage: N calculator-assisted solutions per problem from the fine-tuned generator.

    gsmv sample --split train|val|test|test_greedy

Loads run_dir/generator/final (model + tokenizer), encodes each question as the
generator was trained (gsmv.models.tokenizer.encode_prompt of format_prompt), and
samples cfg.sample.n_{train,val,test} solutions per problem at cfg.sample.temperature
(test_greedy: one greedy solution per test problem, for test@1).

Output: samples/<split>/shard-NNNNN.parquet, shard i holding problems
[i * problems_per_shard, (i + 1) * problems_per_shard) of the split, rows ordered by
problem then sample_idx (schema: SAMPLE_SCHEMA). Each shard is written atomically
when its last sample is done; requests of all pending shards stream through one
sampler so the batch stays full across shard boundaries. A rerun skips shards that
exist (resume): seeds are per (cfg.sample.seed, problem id, sample index), so a
regenerated shard holds the same samples. Under `accelerate launch` shard i belongs to
rank i % world_size. When every shard exists the main process writes
samples/<split>/done.json (shard and sample counts, accuracy); the pipeline's
manifest remains the record that the stage finished for a given config.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from gsmv import progress
from gsmv.artifacts import (
    Damage,
    MetricsLog,
    RunPaths,
    atomic_write_json,
    list_shards,
    parquet_rows,
    read_json_or_none,
    shard_path,
    write_parquet,
)
from gsmv.config import RunConfig
from gsmv.errors import GsmvError
from gsmv.runtime import partial_state, pick_device, pick_dtype, setup_threads
from gsmv.sampling.base import Request, Sample, Sampler, SamplingParams, request_seed

SPLITS = ("train", "val", "test", "test_greedy")

SAMPLE_SCHEMA = pa.schema([
    ("problem_id", pa.string()),
    ("sample_idx", pa.int32()),
    ("text", pa.string()),
    ("tokens", pa.list_(pa.int32())),
    ("n_tokens", pa.int32()),
    ("final_answer", pa.string()),
    ("is_correct", pa.bool_()),
    ("calc_calls", pa.int32()),
    ("forced", pa.list_(pa.bool_())),
    ("finished", pa.bool_()),
])


def split_settings(cfg: RunConfig, split: str) -> tuple[str, int, SamplingParams]:
    """(problem split to read, samples per problem, sampling parameters) of a sample split."""
    if split not in SPLITS:
        raise GsmvError(f"sample: unknown split '{split}': valid splits are {', '.join(SPLITS)}")
    s = cfg.sample
    if split == "test_greedy":
        return "test", 1, SamplingParams(temperature=0.0, max_new_tokens=s.max_new_tokens, calculator=s.calculator)
    n = {"train": s.n_train, "val": s.n_val, "test": s.n_test}[split]
    if n <= 0:
        raise GsmvError(f"config key 'sample.n_{split}' must be > 0 to sample the {split} split")
    params = SamplingParams(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                            calculator=s.calculator)
    return split, n, params


def samples_table(samples: list[Sample]) -> pa.Table:
    return pa.Table.from_pylist([s.as_row() for s in samples], schema=SAMPLE_SCHEMA)


def make_sampler(cfg: RunConfig, model_dir: Path, params: SamplingParams, batch_size: int | None = None) -> Sampler:
    """The configured backend over a saved model folder (model + tokenizer); batch_size: the HF sampler's rows
    decoded together (default sample.batch_size)."""
    if cfg.sample.backend == "vllm":
        from gsmv.sampling.vllm import VLLMSampler

        return VLLMSampler.from_pretrained(str(model_dir), params, seed=cfg.sample.seed,
                                           gpu_memory_utilization=cfg.sample.gpu_memory_utilization)
    from gsmv.models.loading import load_model_and_tokenizer
    from gsmv.sampling.hf import HFSampler

    device = pick_device(cfg)
    model, tok = load_model_and_tokenizer(model_dir, dtype=pick_dtype(cfg, device), device=device)
    return HFSampler(model, tok, params, batch_size=batch_size or cfg.sample.batch_size)


def check_prompt_lengths(prompts: dict[str, tuple[int, ...]], room: int, model_dir: Path, split: str) -> None:
    """A clear error, before anything is sampled, when a prompt plus `room` new tokens does not fit the model's
    context (positions past it would be garbage, and a huge prompt would make the sampler allocate for it)."""
    from transformers import AutoConfig

    from gsmv.models.verifier import max_positions

    context = max_positions(AutoConfig.from_pretrained(model_dir))
    if context is None:
        return
    over = [(pid, len(ids)) for pid, ids in prompts.items() if len(ids) + room > context]
    if over:
        pid, n = max(over, key=lambda item: item[1])
        raise GsmvError(f"sample {split}: {len(over)} problem(s) do not fit the model's context of {context} tokens "
                        f"with sample.max_new_tokens={room}; the longest, {pid!r}, has a {n}-token prompt (shorten "
                        f"or drop those questions, or lower sample.max_new_tokens)")


# Long on purpose: a stage reads top to bottom (settings, resume plan, sampler, the shard loop, done.json);
# the shard bookkeeping is shared by the loop's parts.
def main(cfg: RunConfig, split: str) -> dict[str, Any]:
    """Sample every shard of `split` this rank owns and has not written yet; returns a summary."""
    from gsmv.data.gsm8k import format_prompt
    from gsmv.data.tasks import load_split
    from gsmv.models.tokenizer import encode_prompt

    source, n, params = split_settings(cfg, split)
    state = partial_state(cfg)
    setup_threads(cfg)
    paths = RunPaths(cfg.run_dir)
    out_dir = paths.samples(split)
    problems = load_split(cfg, source)
    if split == "train" and cfg.sample.train_problems > 0:
        problems = problems[:cfg.sample.train_problems]
    if not problems:
        raise GsmvError(f"sample: the {source} split has no problems")
    per = cfg.sample.problems_per_shard
    shards = [problems[i:i + per] for i in range(0, len(problems), per)]
    mine = [i for i in range(len(shards)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not shard_path(out_dir, i).exists()]
    done_here = {"samples": 0, "tokens": 0, "correct": 0}
    t0 = time.time()
    if todo:
        model_dir = paths.generator_final
        if not (model_dir / "config.json").is_file():
            raise GsmvError(f"{model_dir}: no fine-tuned generator (run finetune first)")
        sampler = make_sampler(cfg, model_dir, params)
        tok = sampler.tokenizer  # type: ignore[attr-defined]
        prompts = {p.id: tuple(encode_prompt(tok, format_prompt(p.question))) for i in todo for p in shards[i]}
        check_prompt_lengths(prompts, params.max_new_tokens, model_dir, split)
        shard_of = {p.id: i for i in todo for p in shards[i]}
        order = {p.id: k for i in todo for k, p in enumerate(shards[i])}
        expected = {i: len(shards[i]) * n for i in todo}
        buckets: dict[int, list[Sample]] = {i: [] for i in todo}

        def requests() -> Iterator[Request]:
            for i in todo:
                for p in shards[i]:
                    for j in range(n):
                        yield Request(p.id, j, prompts[p.id], request_seed(cfg.sample.seed, p.id, j), p.answer)

        bar = progress.bar(total=sum(expected.values()), desc=f"sample {split}", unit="sample",
                   disable=not state.is_local_main_process)
        last_post = 0.0
        for s in sampler.generate(requests()):
            i = shard_of[s.problem_id]
            buckets[i].append(s)
            done_here["samples"] += 1
            done_here["tokens"] += s.n_tokens
            done_here["correct"] += bool(s.is_correct)
            bar.update(1)
            if len(buckets[i]) == expected[i]:
                rows = sorted(buckets.pop(i), key=lambda x: (order[x.problem_id], x.sample_idx))
                write_parquet(shard_path(out_dir, i), samples_table(rows))
            now = time.time()
            if now - last_post > 1.0:
                stats = getattr(sampler, "stats", None)
                tps = stats.tokens_per_s if stats is not None else done_here["tokens"] / max(now - t0, 1e-9)
                bar.set_postfix(tok_s=f"{tps:.0f}", acc=f"{done_here['correct'] / done_here['samples']:.3f}")
                last_post = now
        bar.close()
        if buckets:
            missing = ", ".join(str(shard_path(out_dir, i)) for i in sorted(buckets))
            raise GsmvError(f"sample: the sampler returned too few samples for {missing}")
    secs = time.time() - t0
    if todo and state.is_main_process:
        MetricsLog(paths.metrics, "sample").log(
            split=split, shards=len(todo), samples=done_here["samples"], tokens=done_here["tokens"],
            seconds=round(secs, 2), tokens_per_s=round(done_here["tokens"] / max(secs, 1e-9), 1),
            accuracy=round(done_here["correct"] / max(done_here["samples"], 1), 4))
    state.wait_for_everyone()
    summary = {"split": split, "shards": len(shards), "sampled_here": len(todo), "samples_here": done_here["samples"]}
    if state.is_main_process and all(shard_path(out_dir, i).exists() for i in range(len(shards))):
        atomic_write_json(out_dir / "done.json", {
            "split": split, "shards": len(shards), "problems": len(problems), "samples_per_problem": n,
            "temperature": params.temperature, "max_new_tokens": params.max_new_tokens})
    return summary


def check_outputs(paths: RunPaths, cfg: RunConfig, split: str) -> list[Damage]:
    """What is damaged in a finished split (the pipeline's check): every shard done.json counts must exist, be
    readable Parquet and hold its problems x samples rows."""
    folder = paths.samples(split)
    if not folder.is_dir():
        return [(None, f"{folder} is missing")]
    info = read_json_or_none(folder / "done.json")
    try:
        shards, problems, n = (int(info[k]) for k in ("shards", "problems", "samples_per_problem"))
    except (TypeError, KeyError, ValueError):
        # main() rewrites done.json once every shard exists; damaged shards must go first (it skips them).
        bad = [(p, f"{p} is not readable Parquet") for p in list_shards(folder) if parquet_rows(p) is None]
        return [*bad, (None, f"{folder / 'done.json'} is missing or damaged")]
    # Shard i holds problems [i * per, (i + 1) * per) (see main); per is in this stage's hash.
    per = cfg.sample.problems_per_shard
    sizes = [min(per, problems - i * per) * n for i in range(shards)] if shards == -(-problems // per) else None
    out: list[Damage] = []
    total = 0
    for i in range(shards):
        p = shard_path(folder, i)
        rows = parquet_rows(p)
        if not p.exists():
            out.append((None, f"{p} is missing"))
        elif rows is None:
            out.append((p, f"{p} is not readable Parquet"))
        elif sizes and rows != sizes[i]:
            out.append((p, f"{p} holds {rows} samples, not {sizes[i]}"))
        else:
            total += rows
    if not out and total != problems * n:  # no per-shard sizes to blame one shard: sample the split again
        out.append((folder, f"{folder} holds {total} samples, done.json says {problems * n}"))
    return out
