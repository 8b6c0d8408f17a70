"""Stage orchestration: finetune → sample → label → train-verifier → sample test → score → evaluate → report.

Each stage records in manifest.json its status, the hash of the config it depends on
(its own sections plus its upstream stages'), timings and outputs. A stage that is
done for the same hash is skipped; a stage that was interrupted resumes (the stages
themselves skip finished shards and resume from checkpoints). A stage whose hash
changed is refused when it is expensive (its outputs would mix two configs) and
simply redone when it is a cheap derived one (label, evaluate, report).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gsmv.artifacts import RunPaths, atomic_write_json, atomic_write_text, read_json
from gsmv.config import RunConfig, config_hash, to_dict, to_yaml
from gsmv.errors import GsmvError
from gsmv.runtime import partial_state


def _finetune(cfg: RunConfig) -> Any:
    from gsmv.train import finetune

    return finetune.main(cfg)


def _sample(split: str) -> Callable[[RunConfig], Any]:
    def run(cfg: RunConfig) -> Any:
        from gsmv import sample

        return sample.main(cfg, split)

    return run


def _label(cfg: RunConfig) -> Any:
    from gsmv import label

    return label.main(cfg)


def _train_verifier(cfg: RunConfig) -> Any:
    from gsmv.train import verifier

    return verifier.main(cfg)


def _score(cfg: RunConfig) -> Any:
    from gsmv import score

    return score.main(cfg, "test")


def _evaluate(cfg: RunConfig) -> Any:
    from gsmv import evaluate

    return evaluate.main(cfg)


def _report(cfg: RunConfig) -> Any:
    from gsmv import report

    return report.main(cfg)


def _sample_keys(split: str) -> Callable[[RunConfig], dict]:
    """The sampling settings one split depends on (changing n_test must not redo train samples)."""

    def keys(cfg: RunConfig) -> dict:
        s = to_dict(cfg.sample)
        # Samples are seeded per problem and sample, so the batch size (like the backend's memory setting)
        # changes speed, not results.
        skip = ("n_train", "n_val", "n_test", "greedy_test", "batch_size", "gpu_memory_utilization")
        common = {k: v for k, v in s.items() if k not in skip}
        n = {"train": s["n_train"], "val": s["n_val"], "test": s["n_test"], "test_greedy": 1}[split]
        if split == "test_greedy":
            common = {k: v for k, v in common.items() if k not in ("temperature", "top_p", "seed")}
        limit = {"train": cfg.data.train_limit, "val": cfg.data.val_limit}.get(split, cfg.data.test_limit)
        return {"sample": common, "n": n, "limit": limit}

    return keys


def _data_keys(cfg: RunConfig) -> dict:
    d = to_dict(cfg.data)
    # Where the data lives and how much of test is used do not change the generator.
    return {k: v for k, v in d.items() if k not in ("dir", "test_limit")}


@dataclass
class Stage:
    name: str
    fn: Callable[[RunConfig], Any]
    keys: Callable[[RunConfig], dict]  # the config this stage depends on directly
    after: tuple[str, ...]  # upstream stages whose hashes chain into this one's
    outputs: Callable[[RunPaths], list[Path]]
    cheap: bool = False  # derived cheaply from upstream outputs: redo when the config changes
    main_only: bool = False  # runs on the main process only (the others wait)
    extra: dict = field(default_factory=dict)


STAGES: list[Stage] = [
    Stage("finetune", _finetune,
          lambda c: {"data": _data_keys(c), "model": to_dict(c.model), "finetune": to_dict(c.finetune), "seed": c.seed},
          (), lambda p: [p.generator_final]),
    Stage("sample-train", _sample("train"), _sample_keys("train"), ("finetune",), lambda p: [p.samples("train")]),
    Stage("sample-val", _sample("val"), _sample_keys("val"), ("finetune",), lambda p: [p.samples("val")]),
    Stage("label", _label, lambda c: {}, ("sample-train", "sample-val"), lambda p: [p.root / "labels.json"],
          cheap=True, main_only=True),
    Stage("train-verifier", _train_verifier, lambda c: {"verifier": to_dict(c.verifier)}, ("label",),
          lambda p: [p.verifier_final]),
    Stage("sample-test", _sample("test"), _sample_keys("test"), ("finetune",), lambda p: [p.samples("test")]),
    Stage("sample-test-greedy", _sample("test_greedy"), _sample_keys("test_greedy"), ("finetune",),
          lambda p: [p.samples("test_greedy")]),
    Stage("score", _score, lambda c: {"score": to_dict(c.score)}, ("train-verifier", "sample-test"),
          lambda p: [p.scores("test")]),
    Stage("evaluate", _evaluate, lambda c: {"evaluate": to_dict(c.evaluate)}, ("score", "sample-test-greedy"),
          lambda p: [p.results], cheap=True, main_only=True),
    Stage("report", _report, lambda c: {"report": to_dict(c.report)}, ("evaluate",),
          lambda p: [p.report_md, p.report_html], cheap=True, main_only=True),
]
STAGE_NAMES = [s.name for s in STAGES]
_BY_NAME = {s.name: s for s in STAGES}


def stage_hashes(cfg: RunConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in STAGES:
        out[s.name] = config_hash(s.keys(cfg), [out[a] for a in s.after])
    return out


def enabled_stages(cfg: RunConfig) -> list[str]:
    names = list(STAGE_NAMES)
    if not cfg.sample.greedy_test:
        names.remove("sample-test-greedy")
    if cfg.sample.n_val <= 0 or cfg.data.val_size == 0:
        names.remove("sample-val")  # no val problems or samples: the verifier trains without validation
    return names


class Manifest:
    """manifest.json: stage → status, config hash, timings, outputs. Written atomically by the main process."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {"stages": {}}
        if path.exists():
            self.data = read_json(path)
            if not isinstance(self.data, dict) or not isinstance(self.data.get("stages"), dict):
                raise GsmvError(f"{path}: not a gsmv manifest (no 'stages' object)")

    def get(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {})

    def set(self, stage: str, **fields: Any) -> None:
        self.data["stages"].setdefault(stage, {}).update(fields)
        atomic_write_json(self.path, self.data)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _select(cfg: RunConfig, start: str | None, until: str | None, only: list[str] | None) -> list[str]:
    names = enabled_stages(cfg)
    for n in [start, until, *(only or [])]:
        if n is not None and n not in STAGE_NAMES:
            raise GsmvError(f"unknown stage '{n}': stages are {', '.join(STAGE_NAMES)}")
    if only:
        return [n for n in names if n in only]
    i = names.index(start) if start else 0
    j = names.index(until) + 1 if until else len(names)
    return names[i:j]


def _reuse(cfg: RunConfig, stage: Stage, want: str, paths: RunPaths, manifest: Manifest) -> bool:
    """Link a stage's outputs from cfg.reuse_from when that run did it with the same hash (ablations share upstream)."""
    if not cfg.reuse_from:
        return False
    base = RunPaths(cfg.reuse_from)
    if not base.manifest.exists():
        raise GsmvError(f"reuse_from={cfg.reuse_from}: no manifest.json there")
    other = Manifest(base.manifest).get(stage.name)
    if other.get("status") != "done" or other.get("hash") != want:
        return False
    for src, dst in zip(stage.outputs(base), stage.outputs(paths), strict=True):
        if not src.exists():
            return False
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink():
            dst.unlink()
        if not dst.exists():
            os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    manifest.set(stage.name, status="done", hash=want, reused_from=str(cfg.reuse_from), finished=_now(),
                 outputs=[str(p.relative_to(paths.root)) for p in stage.outputs(paths)])
    return True


def run(cfg: RunConfig, start: str | None = None, until: str | None = None, only: list[str] | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Run the selected stages in order; return the manifest data."""
    state = partial_state(cfg)
    paths = RunPaths(cfg.run_dir)
    names = _select(cfg, start, until, only)
    hashes = stage_hashes(cfg)
    if cfg.data.source == "local" and any(n != "report" for n in names):
        _check_data(cfg)  # a bad dataset fails here, before anything is written
    if state.is_main_process:
        paths.root.mkdir(parents=True, exist_ok=True)
        _remove_partial_writes(paths.root)
        atomic_write_text(paths.config, to_yaml(cfg))
    state.wait_for_everyone()
    manifest = Manifest(paths.manifest)
    enabled = enabled_stages(cfg)
    for name in names:
        stage = _BY_NAME[name]
        want = hashes[name]
        # Every rank reads what the main process recorded last (it writes the manifest after the barriers).
        state.wait_for_everyone()
        manifest = Manifest(paths.manifest)
        if _done(manifest, stage, want, paths):
            log(f"[{name}] done earlier for this config: skipped")
            continue
        rec = manifest.get(name)
        # Outputs of another config are refused; once the user deletes them (as the message says) it is redone.
        if rec.get("hash") not in (None, want) and not stage.cheap and any(p.exists() for p in stage.outputs(paths)):
            raise GsmvError(
                f"{paths.manifest}: stage '{name}' was started with a different config (hash {rec.get('hash')}, now "
                f"{want}); use another run name, or delete {', '.join(str(p) for p in stage.outputs(paths))} to redo it")
        for up in stage.after:
            if up not in enabled:
                continue
            if manifest.get(up).get("status") != "done":
                raise GsmvError(f"{paths.root}: stage '{name}' needs '{up}' first (gsmv run --from {up})")
            if manifest.get(up).get("hash") != hashes[up]:
                raise GsmvError(f"{paths.root}: stage '{name}' needs '{up}' redone for this config first "
                                f"(gsmv run --from {up})")
        if state.is_main_process and _reuse(cfg, stage, want, paths, manifest):
            log(f"[{name}] reused from {cfg.reuse_from}")
        state.wait_for_everyone()
        manifest = Manifest(paths.manifest)
        if _done(manifest, stage, want, paths):
            continue  # the main process linked it from cfg.reuse_from
        t0 = time.time()
        if state.is_main_process:
            manifest.set(name, status="running", hash=want, started=_now())
        summary = None
        if not stage.main_only or state.is_main_process:
            summary = stage.fn(cfg)
        state.wait_for_everyone()
        secs = round(time.time() - t0, 1)
        if state.is_main_process:
            manifest.set(name, status="done", hash=want, finished=_now(), seconds=secs,
                         outputs=[str(p.relative_to(paths.root)) for p in stage.outputs(paths)])
        log(f"[{name}] done in {secs:.1f} s" + (f": {_short(summary)}" if summary else ""))
    return manifest.data


def _done(manifest: Manifest, stage: Stage, want: str, paths: RunPaths) -> bool:
    rec = manifest.get(stage.name)
    return rec.get("status") == "done" and rec.get("hash") == want and all(p.exists() for p in stage.outputs(paths))


def _check_data(cfg: RunConfig) -> None:
    from gsmv.data.gsm8k import load_split

    for split in ("train", "test"):  # val is carved from train
        load_split(cfg, split)


def _remove_partial_writes(root: Path) -> None:
    """Delete what a killed atomic write left behind (its temp files never replaced a real artifact)."""
    for p in sorted(root.rglob(".*.tmp"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for p in root.rglob(".*.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def _short(summary: Any) -> str:
    if isinstance(summary, dict):
        items = [f"{k}={v}" for k, v in summary.items() if isinstance(v, int | float | str)]
        return ", ".join(items[:8])
    return str(summary)[:200]
