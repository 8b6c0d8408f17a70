"""A generator's learning curve: val loss and val greedy accuracy against examples seen (issue 45).

    python docs/research/scripts/generator_curve.py --run runs/synth-smol-gen --problems 200 \
        --out docs/research/pretrained-generator/curve.json

Val loss is the finetune stage's own validation passes (metrics.jsonl: `val_loss` at each step, over every val
problem). Greedy accuracy is measured here on the first --problems val problems for every kept checkpoint
(generator/step-NNNNNN; keep them with finetune.keep_checkpoints) and for generator/final, with gsmv's sampler
and calculator as the sample stage runs it (T=0). Examples seen = step x finetune.batch_size x grad_accum x
processes. 95% intervals: bootstrap over the problems. Val only: model selection never reads test.
A checkpoint already measured in --out on as many problems is not measured again (a finished run's curve
adds only its new checkpoints; each greedy pass is minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gsmv.artifacts import RunPaths, read_metrics
from gsmv.config import load_config
from gsmv.data.gsm8k import format_prompt
from gsmv.data.tasks import load_split
from gsmv.metrics import bootstrap_ci
from gsmv.models.tokenizer import encode_prompt
from gsmv.sample import make_sampler
from gsmv.sampling.base import Request, SamplingParams


def greedy_accuracy(cfg, folder: Path, problems: list) -> np.ndarray:
    """Per problem: the greedy solution (calculator on) is right."""
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.sample.max_new_tokens, calculator=cfg.sample.calculator)
    sampler = make_sampler(cfg, folder, params, batch_size=min(cfg.sample.batch_size, len(problems)))
    tok = sampler.tokenizer  # type: ignore[attr-defined]
    reqs = [Request(p.id, 0, tuple(encode_prompt(tok, format_prompt(p.question))), 0, p.answer) for p in problems]
    got = {s.problem_id: bool(s.is_correct) for s in sampler.generate(reqs)}
    return np.array([got[p.id] for p in problems], dtype=float)


def checkpoints(run: Path) -> list[tuple[int | None, Path]]:
    """(step, folder) of every kept checkpoint in step order, then (None, final)."""
    gen = RunPaths(run).generator
    steps = sorted((int(p.name.split("-")[1]), p) for p in gen.glob("step-*") if (p / "config.json").is_file())
    final = RunPaths(run).generator_final
    return steps + ([(None, final)] if (final / "config.json").is_file() else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--problems", type=int, default=200, help="first K val problems (greedy accuracy)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    run = Path(a.run)
    cfg = load_config(RunPaths(run).config, [f"out_dir={run.parent}"])
    problems = load_split(cfg, "val")[: a.problems]
    ft = cfg.finetune
    start = [r for r in read_metrics(RunPaths(run).metrics, "finetune") if r.get("event") == "start"]
    procs = int(start[-1].get("processes", 1)) if start else 1
    per_step = ft.batch_size * ft.grad_accum * procs
    total = int(start[-1]["total_steps"]) if start else None
    losses = {int(r["step"]): float(r["val_loss"]) for r in read_metrics(RunPaths(run).metrics, "finetune")
              if "val_loss" in r and "step" in r}
    old = json.loads(Path(a.out).read_text()) if Path(a.out).is_file() else {}
    done = {q["checkpoint"]: q for q in old.get("points", [])} if old.get("val_problems") == len(problems) else {}
    points = []
    for step, folder in checkpoints(run):
        if folder.name in done and folder.name != "final":  # final is rewritten by a rerun of finetune
            points.append(done[folder.name])
            continue
        t0 = time.time()
        acc = greedy_accuracy(cfg, folder, problems)
        lo, hi = bootstrap_ci(acc[None], 1000, 0)
        s = step if step is not None else total
        points.append({"checkpoint": folder.name, "step": s, "examples": None if s is None else s * per_step,
                       "val_greedy": float(acc.mean()), "ci": [float(lo[0]), float(hi[0])],
                       "val_loss": losses.get(s) if s is not None else None, "seconds": round(time.time() - t0, 1)})
        print(json.dumps(points[-1]), flush=True)
    out = {"run": str(run), "val_problems": len(problems), "val_loss_steps": sorted(losses.items()), "points": points}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
