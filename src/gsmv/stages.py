"""The stages of a run: what each one runs, which config it depends on (its stage hash), the stages it needs,
what it writes and how its outputs are checked.

    finetune ─► sample-train, sample-val ─► label ─► train-verifier ─► score ─► evaluate ─► report
             ─► sample-test, sample-test-greedy ─► label-test ──────────────┘
                                                   train-verifier ─► search ─┘ (search.enabled only)

A stage's hash chains its own config keys with its upstream stages' hashes, so a change reaches exactly the
stages downstream of it. Hashes hold no paths (a moved run folder resumes). The stage modules (gsmv.sample,
gsmv.score, ...) import torch and transformers, so they are imported only when a stage runs or is checked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsmv.artifacts import Damage, RunPaths, check_files
from gsmv.config import RunConfig, config_hash, hash_dict, to_dict, with_run_seed


def _late(module: str, name: str, *bound: Any) -> Callable[..., Any]:
    """module.name(*args, *bound), imported at the first call."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, *bound)

    return call


# ---------------------------------------------------------------- the config each stage depends on

def _data_keys(cfg: RunConfig) -> dict:
    """What the generator's data depends on: the train content itself (so editing train.jsonl, or changing
    a synth knob, is a new config) and how val and limits cut it; not where the files live."""
    from gsmv.data.tasks import data_fingerprint

    d = to_dict(cfg.data)
    keep = {k: d[k] for k in ("val_size", "val_seed", "train_limit", "val_limit")}
    return {**keep, "train_content": data_fingerprint(cfg, "train")}


def _finetune_keys(cfg: RunConfig) -> dict:
    # "seed" is always 0 here (stage_hashes mixes the run seed into finetune.seed); kept so that runs made
    # before keep their hashes.
    return {"data": _data_keys(cfg), "model": hash_dict(cfg.model), "finetune": hash_dict(cfg.finetune),
            "seed": cfg.seed}


def _sample_keys(split: str) -> Callable[[RunConfig], dict]:
    """The sampling settings one split depends on (changing n_test must not redo train samples)."""

    def keys(cfg: RunConfig) -> dict:
        s = hash_dict(cfg.sample)
        # How many samples of which problems: per split, below.
        common = {k: v for k, v in s.items() if k not in ("n_train", "n_val", "n_test", "greedy_test", "train_problems")}
        n = {"train": s["n_train"], "val": s["n_val"], "test": s["n_test"], "test_greedy": 1}[split]
        if split == "test_greedy":
            common = {k: v for k, v in common.items() if k not in ("temperature", "top_p", "seed")}
        limit = {"train": cfg.data.train_limit, "val": cfg.data.val_limit}.get(split, cfg.data.test_limit)
        keys = {"sample": common, "n": n, "limit": limit}
        if split == "train":
            keys["problems"] = s["train_problems"]
        if split in ("test", "test_greedy"):
            from gsmv.data.tasks import data_fingerprint

            keys["test_content"] = data_fingerprint(cfg, "test")
        return keys

    return keys


def _search_keys(cfg: RunConfig) -> dict:
    from gsmv.data.tasks import data_fingerprint

    # score.aggregate is what search ranks its beams by (left out at last, so older runs keep their hash).
    extra = {"aggregate": cfg.score.aggregate} if cfg.score.aggregate != "last" else {}
    return {"search": hash_dict(cfg.search), "max_new_tokens": cfg.sample.max_new_tokens, "calculator": cfg.sample.calculator,
            "limit": cfg.data.test_limit, "test_content": data_fingerprint(cfg, "test"), **extra}


def _evaluate_keys(cfg: RunConfig) -> dict:
    # score.aggregate is how evaluate ranks the stored scores (in no hash of the score stage itself).
    extra = {"aggregate": cfg.score.aggregate} if cfg.score.aggregate != "last" else {}
    return {"evaluate": hash_dict(cfg.evaluate), **extra}


def _no_keys(cfg: RunConfig) -> dict:
    return {}


# ---------------------------------------------------------------- the stage list

@dataclass(frozen=True, kw_only=True)
class Stage:
    name: str
    run: Callable[[RunConfig], Any]
    keys: Callable[[RunConfig], dict]  # the config this stage depends on directly
    after: tuple[str, ...] = ()  # upstream stages whose hashes chain into this one's
    outputs: Callable[[RunPaths], list[Path]]  # what "done" means: these exist and pass `check`
    # Derived cheaply from upstream outputs: redone when its config changes, and a stage command
    # (gsmv label|evaluate|report) runs it again even when done. An expensive stage holding another
    # config's work is refused instead (its outputs would mix two configs).
    derived: bool = False
    main_only: bool = False  # runs on the main process only (the others wait)
    # Everything the stage writes, checkpoints included (what --redo deletes); None: its outputs.
    writes: Callable[[RunPaths], list[Path]] | None = None
    # The damage in a finished stage's outputs; None: every output exists (and a .json one parses).
    check: Callable[[RunPaths, RunConfig], list[Damage]] | None = None

    def all_writes(self, paths: RunPaths) -> list[Path]:
        return self.writes(paths) if self.writes else self.outputs(paths)

    def damage(self, paths: RunPaths, cfg: RunConfig) -> list[Damage]:
        return self.check(paths, cfg) if self.check else check_files(self.outputs(paths))


def _sample_stage(name: str, split: str) -> Stage:
    return Stage(name=name, run=_late("gsmv.sample", "main", split), keys=_sample_keys(split), after=("finetune",),
                 outputs=lambda p: [p.samples(split)], check=_late("gsmv.sample", "check_outputs", split))


def _label_stage(name: str, splits: tuple[str, ...], after: tuple[str, ...], out: str) -> Stage:
    # The test samples are graded by the label stage's code too (a fix to answer parsing reaches them).
    return Stage(name=name, run=_late("gsmv.label", "main", splits, out),
                 keys=_no_keys, after=after, outputs=lambda p: [p.root / out], derived=True, main_only=True)


def _check_model(final: str, verifier: bool = False) -> Callable[[RunPaths, RunConfig], list[Damage]]:
    def check(paths: RunPaths, cfg: RunConfig) -> list[Damage]:
        if verifier:
            from gsmv.models.verifier import check_verifier_folder

            return check_verifier_folder(paths.verifier_final)
        from gsmv.models.loading import check_model_folder

        return check_model_folder(getattr(paths, final))

    return check


STAGES: list[Stage] = [
    Stage(name="finetune", run=_late("gsmv.train.finetune", "main"), keys=_finetune_keys,
          outputs=lambda p: [p.generator_final], writes=lambda p: [p.tokenizer, p.generator],
          check=_check_model("generator_final")),
    _sample_stage("sample-train", "train"),
    _sample_stage("sample-val", "val"),
    _label_stage("label", ("train", "val"), ("sample-train", "sample-val"), "labels.json"),
    Stage(name="train-verifier", run=_late("gsmv.train.verifier", "main"),
          keys=lambda c: {"verifier": hash_dict(c.verifier)}, after=("label",),
          outputs=lambda p: [p.verifier_final], writes=lambda p: [p.verifier],
          check=_check_model("verifier_final", verifier=True)),
    _sample_stage("sample-test", "test"),
    _sample_stage("sample-test-greedy", "test_greedy"),
    _label_stage("label-test", ("test", "test_greedy"), ("sample-test", "sample-test-greedy"), "labels-test.json"),
    Stage(name="score", run=_late("gsmv.score", "main", "test"), keys=lambda c: {"score": hash_dict(c.score)},
          after=("train-verifier", "sample-test"), outputs=lambda p: [p.scores("test")],
          check=_late("gsmv.score", "check_outputs", "test")),
    # The val samples' values: where a threshold on them is chosen (first-error localization, gsmv.steps).
    Stage(name="score-val", run=_late("gsmv.score", "main", "val"), keys=lambda c: {"score": hash_dict(c.score)},
          after=("train-verifier", "sample-val"), outputs=lambda p: [p.scores("val")],
          check=_late("gsmv.score", "check_outputs", "val")),
    Stage(name="search", run=_late("gsmv.search", "main"), keys=_search_keys, after=("train-verifier",),
          outputs=lambda p: [p.search], check=_late("gsmv.search", "check_outputs")),
    Stage(name="evaluate", run=_late("gsmv.evaluate", "main"), keys=_evaluate_keys,
          after=("score", "score-val", "label-test", "search"), outputs=lambda p: [p.results], derived=True, main_only=True),
    Stage(name="report", run=_late("gsmv.report", "main"), keys=lambda c: {"report": hash_dict(c.report)},
          after=("evaluate",), outputs=lambda p: [p.report_md, p.report_html], derived=True, main_only=True,
          writes=lambda p: [p.report_md, p.report_html, p.plots]),
]
STAGE_NAMES = [s.name for s in STAGES]
BY_NAME = {s.name: s for s in STAGES}
TRAIN_STAGES = ("finetune", "sample-train", "sample-val", "label", "train-verifier")  # read the train split
TEST_STAGES = ("sample-test", "sample-test-greedy", "label-test", "score", "search", "evaluate")  # read the test split
SAMPLING_STAGES = ("sample-train", "sample-val", "sample-test", "sample-test-greedy", "search")


def stage_hashes(cfg: RunConfig) -> dict[str, str]:
    # The hashes see the seeds the stages run with (with_run_seed), so a new run seed redoes every stage it
    # changes (finetune, samples, verifier, search) and no other.
    cfg = with_run_seed(cfg)
    out: dict[str, str] = {}
    for s in STAGES:
        out[s.name] = config_hash(s.keys(cfg), [out[a] for a in s.after])
    return out


def enabled_stages(cfg: RunConfig) -> list[str]:
    names = list(STAGE_NAMES)
    if not cfg.sample.greedy_test:
        names.remove("sample-test-greedy")
    if not cfg.search.enabled:
        names.remove("search")
    if cfg.sample.n_val <= 0 or cfg.data.val_size == 0:
        names.remove("sample-val")  # no val problems or samples: the verifier trains without validation
        names.remove("score-val")
    return names


def downstream(names: list[str] | set[str]) -> set[str]:
    """The stages named and every stage that depends on them, directly or not."""
    out = set(names)
    for s in STAGES:  # upstream stages come first in STAGES
        if any(a in out for a in s.after):
            out.add(s.name)
    return out


def upstream(name: str) -> set[str]:
    """Every stage `name` depends on, directly or not."""
    out: set[str] = set()
    todo = list(BY_NAME[name].after)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo += BY_NAME[n].after
    return out
