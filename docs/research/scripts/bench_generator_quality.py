"""Generator quality on the val split: greedy solutions that are well formed, and correct.

    python docs/research/scripts/bench_generator_quality.py --run runs/cpu

Well formed: every `<<` is closed by `>>` with exactly one `=` inside, and the text ends with
`#### N` where N parses as a number. Also prints accuracy by the number of steps of the reference
solution (how difficulty scales), the share of correct solutions with a wrong step where the task has
step-level truth, and the finetune val loss per epoch and its wall time from the run's metrics.jsonl.
Model selection territory: val only, never test. `--model DIR` scores a checkpoint instead of
generator/final (e.g. runs/synth/generator/step-000600).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from gsmv.artifacts import RunPaths, read_metrics
from gsmv.config import load_config
from gsmv.data.answers import extract_answer
from gsmv.data.gsm8k import format_prompt
from gsmv.data.tasks import first_wrong_step, get_task, load_split, reference_values
from gsmv.models.tokenizer import encode_prompt
from gsmv.sample import make_sampler
from gsmv.sampling.base import Request, SamplingParams

FINAL_RE = re.compile(r"####\s*\S+\s*$")


def well_formed(text: str) -> bool:
    depth_ok = re.sub(r"<<[^<>=]*=[^<>=]*>>", "", text)
    if "<<" in depth_ok or ">>" in depth_ok:
        return False
    return bool(FINAL_RE.search(text)) and extract_answer(text) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/cpu", help="run folder with generator/final and config.yaml")
    ap.add_argument("--limit", type=int, default=0, help="first K val problems (0 = all)")
    ap.add_argument("--config", default="", help="config to read instead of the run's config.yaml")
    ap.add_argument("--model", default="", help="model folder (default: the run's generator/final)")
    args = ap.parse_args()
    paths = RunPaths(args.run)
    cfg = load_config(args.config or paths.config)
    problems = load_split(cfg, "val")
    if args.limit:
        problems = problems[: args.limit]
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.sample.max_new_tokens, calculator=True)
    sampler = make_sampler(cfg, Path(args.model) if args.model else paths.generator_final, params)
    tok = sampler.tokenizer  # type: ignore[attr-defined]
    reqs = [Request(p.id, 0, tuple(encode_prompt(tok, format_prompt(p.question))), 0, p.answer) for p in problems]
    t0 = time.time()
    samples = list(sampler.generate(reqs))
    secs = time.time() - t0
    n = len(samples)
    formed = sum(well_formed(s.text) for s in samples)
    correct = sum(bool(s.is_correct) for s in samples)
    print("| run | val problems | well formed | correct (greedy) | greedy seconds |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {args.run} | {n} | {formed / n:.1%} ({formed}) | {correct / n:.1%} ({correct}) | {secs:.1f} |")
    by_id = {p.id: p for p in problems}
    step_truth = get_task(cfg).step_truth
    rows: dict[int, list[tuple[bool, bool]]] = {}
    for s in samples:
        p = by_id[s.problem_id]
        wrong = step_truth and first_wrong_step(s.text, reference_values(p)) is not None
        rows.setdefault(p.solution.count("<<"), []).append((bool(s.is_correct), wrong))
    print("\n| reference steps | problems | correct | correct with a wrong step |\n|---:|---:|---:|---:|")
    for k in sorted(rows):
        ok = [c for c, _ in rows[k]]
        fp = sum(c and w for c, w in rows[k])
        print(f"| {k} | {len(ok)} | {sum(ok) / len(ok):.1%} | {fp} |")
    ft = [r for r in read_metrics(paths.metrics, "finetune") if "val_loss" in r and "epoch" in r]
    if ft:
        print("\n| epoch | val loss |\n|---:|---:|")
        for r in ft:
            if float(r["epoch"]).is_integer():
                print(f"| {int(r['epoch'])} | {r['val_loss']:.4f} |")
    manifest = Path(paths.manifest)
    if manifest.exists():
        rec = json.loads(manifest.read_text())["stages"].get("finetune", {})
        print(f"\nfinetune wall time: {rec.get('seconds')} s")


if __name__ == "__main__":
    main()
