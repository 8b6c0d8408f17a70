"""Stage orchestration: finetune → sample → label → train-verifier → sample test → score → evaluate → report.

Each stage records in manifest.json its status, the hash of the config it depends on
(its own sections plus its upstream stages'), timings and outputs. A stage that is
done for the same hash is skipped; a stage that was interrupted resumes (the stages
themselves skip finished shards and resume from checkpoints). A stage whose hash
changed is refused when it is expensive (its outputs would mix two configs) and
simply redone when it is a cheap derived one (label, evaluate, report).

Before anything is written, every rank checks the config (preflight) and the data;
then the main process, holding the run folder's lock (one gsmv process per folder),
checks that the outputs of finished stages are whole (a damaged or missing shard or
model file makes its stage run again), deletes what `--redo` names, checks the plan
(refusals, missing upstream stages: each message ends with a command that fixes it),
and only then writes config.yaml. Stage hashes hold no paths, so a moved or renamed
run folder resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from gsmv.artifacts import (
    RunPaths,
    atomic_write_json,
    atomic_write_text,
    list_shards,
    os_error_message,
    read_json,
    read_json_or_none,
    shard_path,
)
from gsmv.config import RunConfig, config_hash, hash_dict, to_dict, to_yaml, with_run_seed
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


def _label(splits: tuple[str, ...], out: str) -> Callable[[RunConfig], Any]:
    def run(cfg: RunConfig) -> Any:
        from gsmv import label

        return label.main(cfg, splits=splits, out=out)

    return run


def _train_verifier(cfg: RunConfig) -> Any:
    from gsmv.train import verifier

    return verifier.main(cfg)


def _score(cfg: RunConfig) -> Any:
    from gsmv import score

    return score.main(cfg, "test")


def _search(cfg: RunConfig) -> Any:
    from gsmv import search

    return search.main(cfg)


def _search_keys(cfg: RunConfig) -> dict:
    from gsmv.data.tasks import data_fingerprint

    sc = {k: v for k, v in to_dict(cfg.search).items() if k not in ("enabled", "batch_size")}
    return {"search": sc, "max_new_tokens": cfg.sample.max_new_tokens, "calculator": cfg.sample.calculator,
            "limit": cfg.data.test_limit, "test_content": data_fingerprint(cfg, "test")}


def _check_search(paths: RunPaths, cfg: RunConfig) -> list[Damage]:
    """Every shard done.json counts is readable and holds (its problems) x (beam counts) rows."""
    folder = paths.search
    info = read_json_or_none(folder / "done.json")
    try:
        shards, problems, beams = int(info["shards"]), int(info["problems"]), len(info["beams"])
    except (TypeError, KeyError, ValueError):
        return [(None, f"{folder / 'done.json'} is missing or damaged")]
    per = cfg.search.problems_per_shard
    out: list[Damage] = []
    for i in range(shards):
        p = shard_path(folder, i)
        rows, want = _parquet_rows(p), min(per, problems - i * per) * beams
        if not p.exists():
            out.append((None, f"{p} is missing"))
        elif rows != want:
            out.append((p, f"{p} is not readable Parquet" if rows is None else f"{p} holds {rows} rows, not {want}"))
    return out


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
        skip = ("n_train", "n_val", "n_test", "greedy_test", "batch_size", "gpu_memory_utilization", "train_problems")
        common = {k: v for k, v in s.items() if k not in skip}
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


def _data_keys(cfg: RunConfig) -> dict:
    """What the generator's data depends on: the train content itself (so editing train.jsonl, or changing
    a synth knob, is a new config) and how val and limits cut it; not where the files live."""
    from gsmv.data.tasks import data_fingerprint

    d = to_dict(cfg.data)
    keep = {k: d[k] for k in ("val_size", "val_seed", "train_limit", "val_limit")}
    return {**keep, "train_content": data_fingerprint(cfg, "train")}


# What is wrong with a finished stage's outputs: (what to delete so that the stage makes it again, or None when
# there is nothing to delete; a one-line reason).
Damage = tuple[Path | None, str]


@dataclass
class Stage:
    name: str
    fn: Callable[[RunConfig], Any]
    keys: Callable[[RunConfig], dict]  # the config this stage depends on directly
    after: tuple[str, ...]  # upstream stages whose hashes chain into this one's
    outputs: Callable[[RunPaths], list[Path]]
    cheap: bool = False  # derived cheaply from upstream outputs: redo when the config changes
    main_only: bool = False  # runs on the main process only (the others wait)
    # Everything the stage writes, checkpoints included (what --redo deletes); None: its outputs.
    work: Callable[[RunPaths], list[Path]] | None = None
    # The damage in a finished stage's outputs; None: every output exists (and a .json one parses).
    check: Callable[[RunPaths, RunConfig], list[Damage]] | None = None
    extra: dict = field(default_factory=dict)

    def written(self, paths: RunPaths) -> list[Path]:
        return self.work(paths) if self.work else self.outputs(paths)

    def damage(self, paths: RunPaths, cfg: RunConfig) -> list[Damage]:
        return self.check(paths, cfg) if self.check else _check_files(self.outputs(paths))


def _parquet_rows(path: Path) -> int | None:
    """The row count in a Parquet file's footer (cheap: the data is not read); None if it is not readable."""
    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a bad file
        return None


def _check_files(files: list[Path]) -> list[Damage]:
    out: list[Damage] = []
    for p in files:
        if not p.exists():
            out.append((None, f"{p} is missing"))
        elif p.suffix == ".json" and not isinstance(read_json_or_none(p), dict):
            out.append((p, f"{p} is not a JSON object"))
    return out


def _listed_shards(folder: Path) -> list[Path]:
    """The shards a finished sample folder holds: done.json's count, else whatever is there."""
    info = read_json_or_none(folder / "done.json")
    if isinstance(info, dict) and isinstance(info.get("shards"), int):
        return [shard_path(folder, i) for i in range(info["shards"])]
    return list_shards(folder)


def _check_samples(split: str) -> Callable[[RunPaths, RunConfig], list[Damage]]:
    """Every shard done.json counts exists, is readable Parquet and holds its problems x samples rows."""

    def check(paths: RunPaths, cfg: RunConfig) -> list[Damage]:
        folder = paths.samples(split)
        if not folder.is_dir():
            return [(None, f"{folder} is missing")]
        info = read_json_or_none(folder / "done.json")
        try:
            shards, problems, n = (int(info[k]) for k in ("shards", "problems", "samples_per_problem"))
        except (TypeError, KeyError, ValueError):
            # The stage rewrites done.json once every shard exists; damaged shards must go first (it skips them).
            bad = [(p, f"{p} is not readable Parquet") for p in list_shards(folder) if _parquet_rows(p) is None]
            return [*bad, (None, f"{folder / 'done.json'} is missing or damaged")]
        # Shard i holds problems [i * per, (i + 1) * per) (gsmv.sample); per is in this stage's hash.
        per = cfg.sample.problems_per_shard
        sizes = [min(per, problems - i * per) * n for i in range(shards)] if shards == -(-problems // per) else None
        out: list[Damage] = []
        total = 0
        for i in range(shards):
            p = shard_path(folder, i)
            rows = _parquet_rows(p)
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

    return check


def _check_scores(split: str) -> Callable[[RunPaths, RunConfig], list[Damage]]:
    """A readable score shard for every sample shard, with as many rows (score.py writes no done.json)."""

    def check(paths: RunPaths, cfg: RunConfig) -> list[Damage]:
        out: list[Damage] = []
        for s in _listed_shards(paths.samples(split)):
            p = paths.scores(split) / s.name
            rows = _parquet_rows(p)
            want = _parquet_rows(s)  # None when the sample shard is damaged: the sample stage's check says so
            if not p.exists():
                out.append((None, f"{p} is missing"))
            elif rows is None:
                out.append((p, f"{p} is not readable Parquet"))
            elif want is not None and rows != want:
                out.append((p, f"{p} holds {rows} scores for {want} samples"))
        return out

    return check


def _safetensors_ok(path: Path) -> bool:
    """The header parses and the file is as long as the header says (a truncated copy is not)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > size:
                return False
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False


def _check_model(folder: Path, verifier: bool = False) -> list[Damage]:
    """config.json, the tokenizer and whole weights (+ the verifier's head files). A damaged folder is deleted as a whole:
    the training loop then writes it again from its last checkpoint."""
    if not folder.is_dir():
        return [(None, f"{folder} is missing")]
    # tokenizer_config.json: save_pretrained writes it for every tokenizer (the other tokenizer files vary by model).
    bad = [f for f in ("config.json", "tokenizer_config.json") if not (folder / f).is_file()]
    index = folder / "model.safetensors.index.json"
    weights: list[str] = []
    if index.is_file():
        try:
            weights = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            bad.append(index.name)
    elif (folder / "model.safetensors").exists():
        weights = ["model.safetensors"]
    elif not any(folder.glob("pytorch_model*.bin")):  # torch pickles: nothing cheap to check beyond existence
        bad.append("model weights")
    if verifier:
        from gsmv.models.verifier import CONFIG_NAME, HEAD_NAME

        weights.append(HEAD_NAME)
        if not (folder / CONFIG_NAME).is_file():
            bad.append(CONFIG_NAME)
    bad += [w for w in weights if not _safetensors_ok(folder / w)]
    return [(folder, f"{folder}: {', '.join(bad)} missing or damaged")] if bad else []


STAGES: list[Stage] = [
    Stage("finetune", _finetune,
          # "seed" is always 0 here (stage_hashes mixes the run seed into finetune.seed); kept so that runs made
          # before keep their hashes.
          lambda c: {"data": _data_keys(c), "model": to_dict(c.model), "finetune": to_dict(c.finetune), "seed": c.seed},
          (), lambda p: [p.generator_final], work=lambda p: [p.tokenizer, p.generator],
          check=lambda p, c: _check_model(p.generator_final)),
    Stage("sample-train", _sample("train"), _sample_keys("train"), ("finetune",), lambda p: [p.samples("train")],
          check=_check_samples("train")),
    Stage("sample-val", _sample("val"), _sample_keys("val"), ("finetune",), lambda p: [p.samples("val")],
          check=_check_samples("val")),
    Stage("label", _label(("train", "val"), "labels.json"), lambda c: {}, ("sample-train", "sample-val"),
          lambda p: [p.root / "labels.json"], cheap=True, main_only=True),
    Stage("train-verifier", _train_verifier, lambda c: {"verifier": hash_dict(c.verifier)}, ("label",),
          lambda p: [p.verifier_final], work=lambda p: [p.verifier],
          check=lambda p, c: _check_model(p.verifier_final, verifier=True)),
    Stage("sample-test", _sample("test"), _sample_keys("test"), ("finetune",), lambda p: [p.samples("test")],
          check=_check_samples("test")),
    Stage("sample-test-greedy", _sample("test_greedy"), _sample_keys("test_greedy"), ("finetune",),
          lambda p: [p.samples("test_greedy")], check=_check_samples("test_greedy")),
    # The test samples are graded by the label stage's code too (a fix to answer parsing reaches them).
    Stage("label-test", _label(("test", "test_greedy"), "labels-test.json"), lambda c: {},
          ("sample-test", "sample-test-greedy"), lambda p: [p.root / "labels-test.json"], cheap=True, main_only=True),
    Stage("score", _score, lambda c: {"score": to_dict(c.score)}, ("train-verifier", "sample-test"),
          lambda p: [p.scores("test")], check=_check_scores("test")),
    Stage("search", _search, _search_keys, ("train-verifier",), lambda p: [p.search], check=_check_search),
    Stage("evaluate", _evaluate, lambda c: {"evaluate": to_dict(c.evaluate)}, ("score", "label-test", "search"),
          lambda p: [p.results], cheap=True, main_only=True),
    Stage("report", _report, lambda c: {"report": to_dict(c.report)}, ("evaluate",),
          lambda p: [p.report_md, p.report_html], cheap=True, main_only=True,
          work=lambda p: [p.report_md, p.report_html, p.plots]),
]
STAGE_NAMES = [s.name for s in STAGES]
_BY_NAME = {s.name: s for s in STAGES}
TRAIN_STAGES = ("finetune", "sample-train", "sample-val", "label", "train-verifier")  # read the train split
TEST_STAGES = ("sample-test", "sample-test-greedy", "label-test", "score", "search", "evaluate")  # read the test split
LOCK_FILE = ".gsmv.lock"


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
    return names


def downstream(names: list[str] | set[str]) -> set[str]:
    """The stages named and every stage that depends on them, directly or not."""
    out = set(names)
    for s in STAGES:  # upstream stages come first in STAGES
        if any(a in out for a in s.after):
            out.add(s.name)
    return out


def _upstream(name: str) -> set[str]:
    out: set[str] = set()
    todo = list(_BY_NAME[name].after)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo += _BY_NAME[n].after
    return out


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
        self.save()

    def save(self) -> None:
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


def preflight(cfg: RunConfig, names: list[str]) -> None:
    """Config values that would fail only once an earlier stage has spent its time (or would train nothing),
    checked for the selected stages before anything is written."""
    sel = set(names)
    rules: list[tuple[str, bool, str]] = []  # (key, wrong, what it must be)
    for sect, stage in (("finetune", "finetune"), ("verifier", "train-verifier")):
        if stage in sel:
            t = getattr(cfg, sect)
            rules += [(f"{sect}.epochs", t.epochs <= 0, "> 0"), (f"{sect}.lr", t.lr < 0, ">= 0"),
                      (f"{sect}.max_len", t.max_len <= 0, "> 0")]
    if "score" in sel:  # the score stage cuts inputs at verifier.max_len, like training did
        rules.append(("verifier.max_len", cfg.verifier.max_len <= 0, "> 0"))
    if "sample-train" in sel:
        rules.append(("sample.n_train", cfg.sample.n_train <= 0, "> 0"))
    if sel & {"sample-test", "score", "evaluate"}:
        rules.append(("sample.n_test", cfg.sample.n_test <= 0, "> 0"))
    for key, wrong, must in rules:
        if wrong:
            sect, field_ = key.split(".")
            raise GsmvError(f"config key '{key}' is {getattr(getattr(cfg, sect), field_)}: it must be {must}")


def _check_data(cfg: RunConfig, names: list[str]) -> None:
    """Load (so validate) train and test; the splits the selected stages read must not be empty."""
    from gsmv.data.tasks import load_split

    for split, readers in (("train", TRAIN_STAGES), ("test", TEST_STAGES)):  # val is carved from train
        problems = load_split(cfg, split)
        if not problems and set(readers) & set(names):
            hint = "data.dir, data.train_limit and data.val_size" if split == "train" else "data.dir, data.test_limit"
            raise GsmvError(f"data: the {split} split has no problems (data.source={cfg.data.source}; check {hint})")


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
    if stage.damage(base, cfg):
        return False  # that run's copy is incomplete: do it here
    for src, dst in zip(stage.outputs(base), stage.outputs(paths), strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink():
            dst.unlink()
        if not dst.exists():
            os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    manifest.set(stage.name, status="done", hash=want, reused_from=str(cfg.reuse_from), finished=_now(),
                 outputs=[str(p.relative_to(paths.root)) for p in stage.outputs(paths)])
    return True


def run(cfg: RunConfig, start: str | None = None, until: str | None = None, only: list[str] | None = None,
        log: Callable[[str], None] = print, redo: list[str] | None = None) -> dict:
    """Run the selected stages in order; return the manifest data.

    redo: stages whose outputs (and those of every stage downstream) are deleted first, so that they run again.
    A cheap stage named in `only` (the commands `gsmv label|evaluate|report`) runs even when done."""
    state = partial_state(cfg)
    paths = RunPaths(cfg.run_dir)
    names = _select(cfg, start, until, only)
    if redo:
        _select(cfg, None, None, redo)  # unknown stage names are an error
    # Disabled stages included: their old outputs are deleted too (they would outlive their manifest entry).
    redo_set = downstream(set(redo or []))
    again = {n for n in only or [] if _BY_NAME[n].cheap}
    # Everything that can be checked without writing is checked on every rank, before anything is written.
    preflight(cfg, names)
    if any(n != "report" for n in names):
        _check_data(cfg, names)  # a bad dataset fails here, before anything is written
    hashes = stage_hashes(cfg)
    lock: RunLock | None = None

    def setup() -> None:
        nonlocal lock
        if not paths.root.exists():  # nothing there to repair or refuse: a plan that cannot run creates nothing
            _check_plan(cfg, paths, Manifest(paths.manifest), names, hashes, enabled_stages(cfg), redo_set)
        lock = RunLock(paths.root)
        _prepare(cfg, paths, names, hashes, redo_set, log)

    try:
        _on_main(state, setup)
        enabled = enabled_stages(cfg)
        manifest = Manifest(paths.manifest)
        for name in names:
            stage = _BY_NAME[name]
            want = hashes[name]
            # Every rank reads what the main process recorded last (it writes the manifest after the barriers).
            state.wait_for_everyone()
            manifest = Manifest(paths.manifest)
            if name not in again and _done(manifest, stage, want, paths):
                log(f"[{name}] done earlier for this config: skipped")
                continue
            for up in stage.after:  # _prepare checked this plan; a stage that failed to finish would show here
                if up in enabled and not _done(manifest, _BY_NAME[up], hashes[up], paths):
                    raise GsmvError(f"{paths.root}: stage '{name}' needs '{up}' first (gsmv run --from {up})")
            if state.is_main_process and name not in redo_set and name not in again and \
                    _reuse(cfg, stage, want, paths, manifest):
                log(f"[{name}] reused from {cfg.reuse_from}")
            state.wait_for_everyone()
            manifest = Manifest(paths.manifest)
            if name not in again and _done(manifest, stage, want, paths):
                continue  # the main process linked it from cfg.reuse_from
            t0 = time.time()
            if state.is_main_process:
                manifest.set(name, status="running", hash=want, started=_now())
            summary = None
            if not stage.main_only or state.is_main_process:
                _free_samplers_unless_sampling(name)
                summary = stage.fn(with_run_seed(cfg))
            state.wait_for_everyone()
            secs = round(time.time() - t0, 1)
            if state.is_main_process:
                manifest.set(name, status="done", hash=want, finished=_now(), seconds=secs,
                             outputs=[str(p.relative_to(paths.root)) for p in stage.outputs(paths)])
            log(f"[{name}] done in {secs:.1f} s" + (f": {_short(summary)}" if summary else ""))
        return manifest.data
    finally:
        if lock is not None:
            lock.release()


SAMPLING_STAGES = ("sample-train", "sample-val", "sample-test", "sample-test-greedy", "search")


def _free_samplers_unless_sampling(name: str) -> None:
    """Before a stage that does not sample, free the vLLM engine the sample stages share (it holds most of the GPU's
    memory, which verifier training and scoring need). Loaded only if a sample stage loaded it."""
    vllm_mod = sys.modules.get("gsmv.sampling.vllm")
    if name not in SAMPLING_STAGES and vllm_mod is not None:
        vllm_mod.release_engines()


def _on_main(state: Any, fn: Callable[[], None]) -> None:
    """Call fn on the main process only; its error is raised on every rank (the others would otherwise wait for
    the main process at the next barrier forever)."""
    err = None
    if state.is_main_process:
        try:
            fn()
        except GsmvError as e:
            err = str(e)
        except OSError as e:
            err = os_error_message(e)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        err = broadcast_object_list([err])[0]
    if err is not None:
        raise GsmvError(err)


def _prepare(cfg: RunConfig, paths: RunPaths, names: list[str], hashes: dict[str, str], redo: set[str],
             log: Callable[[str], None]) -> None:
    """Main process, under the run lock: check the outputs of finished stages, check the plan, and only then
    delete what --redo names and write config.yaml and the data copy (a refused run changes nothing)."""
    from gsmv.data.tasks import record_data

    _remove_partial_writes(paths.root)
    manifest = Manifest(paths.manifest)
    enabled = enabled_stages(cfg)
    _repair(cfg, paths, manifest, enabled, hashes, log)
    for n in redo:
        manifest.data["stages"].pop(n, None)  # in memory until the plan is accepted
    _check_plan(cfg, paths, manifest, names, hashes, enabled, redo)
    # Every redone stage's outputs go, enabled or not: a disabled stage's old outputs (e.g. search's, made
    # with the old verifier) would otherwise outlive their manifest entry and be read as current.
    for n in sorted(redo, key=STAGE_NAMES.index):
        written = [p for p in _BY_NAME[n].written(paths) if p.exists() or p.is_symlink()]
        for p in written:
            _remove(p)
        if written or n in enabled:
            log(f"[{n}] outputs deleted (--redo)")
    if redo:
        manifest.save()
    atomic_write_text(paths.config, to_yaml(cfg))
    record_data(cfg, paths.root / "data")


def _repair(cfg: RunConfig, paths: RunPaths, manifest: Manifest, enabled: list[str], hashes: dict[str, str],
            log: Callable[[str], None]) -> None:
    """A finished stage whose outputs are missing or damaged is not done any more: delete the damaged parts
    (the stage skips what exists, so it remakes exactly the rest) and mark it and its downstream stages
    not done (they ran on the old outputs; rerunning them is cheap where their own outputs are whole)."""
    stale: set[str] = set()
    for s in STAGES:
        # Only stages done for this config: another config's outputs are _check_plan's business (and judged
        # by this config, e.g. its shard size, they would look damaged).
        if s.name not in enabled or not _ready(manifest, s.name, hashes):
            continue
        if s.name in stale:
            manifest.set(s.name, status="stale")
            continue
        damage = s.damage(paths, cfg)
        if not damage:
            continue
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        log(f"[{s.name}] outputs incomplete: {damage[0][1]}{more}; the stage runs again")
        links = [p for p in s.outputs(paths) if p.is_symlink()]
        if links:  # linked from cfg.reuse_from: drop the links, never touch the other run's files
            for p in links:
                p.unlink()
        else:
            for p, _ in damage:
                if p is not None:
                    _remove(p)
        manifest.set(s.name, status="incomplete")
        stale |= downstream([s.name]) - {s.name}


def _ready(manifest: Manifest, name: str, hashes: dict[str, str]) -> bool:
    rec = manifest.get(name)
    return rec.get("status") == "done" and rec.get("hash") == hashes[name]


def _refused(manifest: Manifest, name: str, hashes: dict[str, str], paths: RunPaths) -> bool:
    """Work of another config is there: redoing the stage over it would mix two configs in one output."""
    stage, rec = _BY_NAME[name], manifest.get(name)
    return rec.get("hash") not in (None, hashes[name]) and not stage.cheap and \
        any(p.exists() or p.is_symlink() for p in stage.written(paths))


def _fix(manifest: Manifest, paths: RunPaths, hashes: dict[str, str], enabled: list[str], first: str,
         last: str, redo: set[str]) -> str:
    """A `gsmv run` command that runs the stages first..last, redoing those holding another config's work
    (and those the user asked to redo)."""
    span = enabled[enabled.index(first):enabled.index(last) + 1]
    again = [n for n in span if n in redo or _refused(manifest, n, hashes, paths)]
    roots = [n for n in again if not _upstream(n) & set(again)]  # --redo also redoes what depends on them
    cmd = ["gsmv run"]
    if first != enabled[0]:
        cmd.append(f"--from {first}")
    if last != enabled[-1]:
        cmd.append(f"--until {last}")
    cmd += [f"--redo {n}" for n in roots]
    return " ".join(cmd) + " (with the same --config and overrides)"


def _check_plan(cfg: RunConfig, paths: RunPaths, manifest: Manifest, names: list[str], hashes: dict[str, str],
                enabled: list[str], redo: set[str]) -> None:
    """Refuse, before anything runs, a stage holding another config's work and a stage whose upstream is
    neither done nor selected; each message ends with a command that fixes it."""
    refused = [n for n in names if _refused(manifest, n, hashes, paths)]
    if refused:
        n = refused[0]
        written = ", ".join(str(p) for p in _BY_NAME[n].written(paths) if p.exists() or p.is_symlink())
        raise GsmvError(
            f"{paths.manifest}: stage '{n}' was run with a different config (hash {manifest.get(n).get('hash')}, "
            f"now {hashes[n]}; its work: {written}); use another run name, or redo it: "
            f"{_fix(manifest, paths, hashes, enabled, names[0], names[-1], redo)}")
    will_run: set[str] = set()
    for name in names:
        for up in _BY_NAME[name].after:
            if up in enabled and up not in will_run and not _ready(manifest, up, hashes):
                # The first stage of everything the selection needs that is not done: run from there.
                need = set().union(*(_upstream(n) for n in names)) | set(names)
                first = next(n for n in enabled if n in need and not _ready(manifest, n, hashes))
                why = "redone for this config" if manifest.get(up).get("hash") not in (None, hashes[up]) else ""
                raise GsmvError(f"{paths.root}: stage '{name}' needs '{up}' {why or 'first'} "
                                f"({_fix(manifest, paths, hashes, enabled, first, names[-1], redo)})")
        will_run.add(name)


def _done(manifest: Manifest, stage: Stage, want: str, paths: RunPaths) -> bool:
    rec = manifest.get(stage.name)
    return rec.get("status") == "done" and rec.get("hash") == want and all(p.exists() for p in stage.outputs(paths))


def _remove(p: Path) -> None:
    """Delete a file or folder; a symlink (an output linked from reuse_from) is unlinked, never followed."""
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p)


class RunLock:
    """One gsmv process per run folder: an exclusive flock on run_dir/.gsmv.lock, held until release() (or the
    process's end: the kernel drops the lock with the descriptor, so a killed run never leaves a stale lock).
    The file names the holder for the message a second process gets."""

    def __init__(self, root: Path):
        if root.exists() and not root.is_dir():
            raise GsmvError(f"{root}: exists and is not a folder (choose another out_dir or name)")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GsmvError(f"{root}: cannot create the run folder ({e.strerror or e})") from None
        path = root / LOCK_FILE
        try:
            self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GsmvError(f"{root}: cannot write in the run folder ({e.strerror or e})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(self.fd)  # not release(): the file is the holder's to empty
            raise GsmvError(f"{root}: in use by another gsmv run ({holder}); wait for it to end, "
                            "or use another run name") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}, since {_now()}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):  # while still held: only a holder's name is ever in the file
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # drops the flock
            self.fd = None


@contextlib.contextmanager
def read_lock(root: Path):
    """A shared flock on the run's lock file while a reader (gsmv solve) loads the run's models: refused, naming
    the holder, while a `gsmv run` holds the folder (it may be writing them); a run started meanwhile waits
    for no reader but is refused its lock until the reader is done."""
    path = root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: nobody can be writing in it through gsmv either
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            raise GsmvError(f"{root}: in use by a gsmv run ({holder}); its models may be being written: "
                            "wait for it to end") from None
        yield
    finally:
        os.close(fd)


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
