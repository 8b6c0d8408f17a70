"""Tasks: where a run's problems come from, and whether their solutions' steps can be checked.

Two tasks share GSM8K's record format (and so its prompt, gsmv.data.gsm8k.format_prompt, and its
grading by final answer, gsmv.data.answers.is_correct), so every stage runs unchanged on either:
 - GSM8K (data.source auto | local | hf): a folder of jsonl, else the Hugging Face hub;
 - the synthetic task (data.source synth, gsmv.data.synth): generated from a seed, no download, and with
   step-level truth (every intermediate value is known, so a solution's reasoning can be checked).

`load_split(cfg, split)` is what the stages call: train / val / test problems, val carved from train.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gsmv.artifacts import read_json_or_none
from gsmv.config import RunConfig, SynthConfig
from gsmv.data.calculator import find_annotations
from gsmv.data.gsm8k import Problem, load_hf, load_jsonl
from gsmv.data.synth import SynthSettings, generate
from gsmv.errors import GsmvError

SPLITS = ("train", "val", "test")

__all__ = ["SPLITS", "Task", "get_task", "load_split", "fresh_problems", "first_wrong_step", "data_fingerprint"]


@dataclass(frozen=True)
class Task:
    name: str  # gsm8k | synth
    # The reference solution's intermediate values are the only right ones (synth: one computation graph).
    # GSM8K problems can be solved along other paths, so its samples' steps are not checked.
    step_truth: bool
    where: str  # the data's origin, for logs and errors


def _synth_settings(sy: SynthConfig, split: str) -> SynthSettings:
    base = {k: v for k, v in asdict(sy).items() if k in SynthSettings.__dataclass_fields__}
    s = SynthSettings(**base)
    if split == "test" and sy.test_max_steps > 0:
        s = replace(s, min_steps=sy.test_min_steps, max_steps=sy.test_max_steps)
    return s


@functools.lru_cache(maxsize=4)
def _synth_problems(sy_items: tuple) -> dict[str, list[Problem]]:
    sy = SynthConfig(**dict(sy_items))
    train = generate(sy.train_size, sy.seed, _synth_settings(sy, "train"), stream="train")
    test = generate(sy.test_size, sy.seed, _synth_settings(sy, "test"),
                    exclude={p.question for p in train}, stream="test")
    return {split: [Problem(f"{split}-{i:05d}", p.question, p.answer, p.values[-1]) for i, p in enumerate(ps)]
            for split, ps in (("train", train), ("test", test))}


def _local_candidates(cfg: RunConfig) -> list[Path]:
    if cfg.data.dir:
        return [Path(cfg.data.dir)]
    if os.environ.get("GSMV_DATA_DIR"):
        return [Path(os.environ["GSMV_DATA_DIR"])]
    here = Path(__file__).resolve().parents[3]  # the checkout (src layout)
    return [base.parent / "shared" / "data" / "gsm8k" for base in (Path.cwd(), here)]


def _gsm8k_folder(cfg: RunConfig) -> Path | None:
    for cand in _local_candidates(cfg):
        if (cand / "train.jsonl").is_file() or (cand / "test.jsonl").is_file():
            return cand
    return None


def data_dir(cfg: RunConfig) -> Path:
    """The local GSM8K folder: data.dir, then $GSMV_DATA_DIR, then ../shared/data/gsm8k beside the working
    directory or the checkout (the first that holds GSM8K files; else the first candidate)."""
    return _gsm8k_folder(cfg) or _local_candidates(cfg)[0]


def get_task(cfg: RunConfig) -> Task:
    src = cfg.data.source
    if src == "synth":
        return Task("synth", True, "synthetic (data.synth)")
    if src == "hf":
        return Task("gsm8k", False, "hf:openai/gsm8k")
    folder = _gsm8k_folder(cfg)
    if folder is not None:
        return Task("gsm8k", False, str(folder))
    if src == "local" or cfg.data.dir or os.environ.get("GSMV_DATA_DIR"):
        # A folder was named (or local asked for): read it, so the error names the missing file.
        return Task("gsm8k", False, str(_local_candidates(cfg)[0]))
    return Task("gsm8k", False, "hf:openai/gsm8k")  # auto, nothing local: the hub (load_hf explains a failure)


def _raw(cfg: RunConfig, task: Task, split: str) -> list[Problem]:
    """train or test problems of the task, before the val split and limits."""
    if task.name == "synth":
        return _synth_problems(tuple(sorted(asdict(cfg.data.synth).items())))[split]
    if task.where.startswith("hf:"):
        try:
            return load_hf(split)
        except GsmvError as e:
            if cfg.data.source != "auto":
                raise
            looked = ", ".join(str(p) for p in _local_candidates(cfg))
            raise GsmvError(f"no GSM8K found: no train.jsonl/test.jsonl in {looked}, and the hub failed ({e}); "
                            "set data.dir to a GSM8K folder, or use data.source=synth") from None
    path = Path(task.where) / f"{split}.jsonl"
    try:
        st = path.stat()
    except OSError:
        return load_jsonl(path, split)  # its error names the missing file
    return _load_local(str(path), split, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_local(path: str, split: str, mtime_ns: int, size: int) -> list[Problem]:
    """A GSM8K file, parsed once per process while it is unchanged: a run reads its data for the checks,
    the stage hashes, the run folder's copy and several stages (the file's stat is part of the key)."""
    return load_jsonl(path, split)


def split_val(train: list[Problem], val_size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train minus val, val): val is a seeded sample of val_size problems; both keep file order."""
    if val_size == 0:
        return list(train), []
    if not 0 < val_size < len(train):
        raise GsmvError(
            f"config key 'data.val_size' is {val_size}: it must be >= 0 and leave train problems "
            f"(train has {len(train)})"
        )
    if 2 * val_size > len(train):
        # An error, not a warning: val_size comes from a preset sized for thousands of problems, so on a small
        # folder of one's own it silently leaves the generator and the verifier a few problems to learn from
        # (issue 46: 20 of 24), and a warning would scroll past (every stage reloads the split).
        raise GsmvError(
            f"config key 'data.val_size' is {val_size}: val would take {val_size} of the {len(train)} train "
            f"problems, more than half; set data.val_size={max(1, len(train) // 5)} "
            f"(at most {len(train) // 2})"
        )
    chosen = set(random.Random(seed).sample(range(len(train)), val_size))
    rest = [p for i, p in enumerate(train) if i not in chosen]
    val = [p for i, p in enumerate(train) if i in chosen]
    return rest, val


def load_split(cfg: RunConfig, split: str) -> list[Problem]:
    """The problems of `split` ∈ train/val/test, cut to the first cfg.data.<split>_limit (0 = all)."""
    if split not in SPLITS:
        raise GsmvError(f"unknown split '{split}': valid splits are {', '.join(SPLITS)}")
    task = get_task(cfg)
    if split == "test":
        problems = _raw(cfg, task, "test")
    else:
        rest, val = split_val(_raw(cfg, task, "train"), cfg.data.val_size, cfg.data.val_seed)
        problems = rest if split == "train" else val
    limit = getattr(cfg.data, f"{split}_limit")
    if limit < 0:
        raise GsmvError(f"config key 'data.{split}_limit' is {limit}: it must be >= 0 (0 = all)")
    return problems[:limit] if limit > 0 else list(problems)  # a copy: the loaded lists are cached


def fresh_problems(cfg: RunConfig, n: int, stream: str = "fresh") -> list[Problem]:
    """`n` newly drawn synth problems of the train distribution (their own RNG stream, so the same for every
    run of one data.synth), none of them a train, val or test question: extra training text that no split
    holds (verifier.lm_data=fresh). Another `stream` draws another sequence (ids prefixed with it), e.g.
    problems for the verifier's samples drawn apart from the LM half's fresh references (independent draws:
    a short question can occur in both)."""
    if get_task(cfg).name != "synth":
        raise GsmvError(f"fresh problems need the synth task (data.source=synth), not {cfg.data.source}")
    sy = cfg.data.synth
    splits = _synth_problems(tuple(sorted(asdict(sy).items())))
    seen = {p.question for ps in splits.values() for p in ps}
    drawn = generate(n, sy.seed, _synth_settings(sy, "train"), exclude=seen, stream=stream)
    return [Problem(f"{stream}-{i:07d}", p.question, p.answer, p.values[-1]) for i, p in enumerate(drawn)]


def data_fingerprint(cfg: RunConfig, split: str) -> str:
    """A hash of the content of the train or test problems: editing the data changes the stage hashes."""
    return _fingerprint(_raw(cfg, get_task(cfg), split))


def _fingerprint(problems: list[Problem]) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(p.question.encode())
        h.update(b"\0")
        h.update(p.solution.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def record_data(cfg: RunConfig, folder: Path) -> None:
    """Keep the run's problems in its folder (train.jsonl with val inside, test.jsonl, info.json), so a run
    can be reproduced or inspected without the generator's settings or the original files."""
    from gsmv.artifacts import atomic_write_json, atomic_write_text

    task = get_task(cfg)
    old = read_json_or_none(folder / "info.json")
    old = old if isinstance(old, dict) else {}
    info = {"task": task.name, "source": task.where}
    for split in ("train", "test"):
        problems = _raw(cfg, task, split)
        fp = _fingerprint(problems)
        info[split] = {"problems": len(problems), "content": fp}
        path = folder / f"{split}.jsonl"
        if path.is_file() and (old.get(split) or {}).get("content") == fp:
            continue  # already there (a resumed run)
        atomic_write_text(path, "".join(to_jsonl(p) for p in problems))
    atomic_write_json(folder / "info.json", info)


def to_jsonl(p: Problem) -> str:
    return json.dumps({"question": p.question, "answer": p.solution}, ensure_ascii=False) + "\n"


def reference_values(problem: Problem) -> frozenset[str]:
    """The intermediate results of the reference solution (its annotations' results)."""
    return frozenset(a.result.strip() for a in find_annotations(problem.solution))


def first_wrong_step(text: str, values: frozenset[str]) -> int | None:
    """Where the first wrong step ends (the char offset after its `>>`), or None when every step is right.

    A step is an annotation `<<expr=result>>`; it is right when its result is one of the reference's
    intermediate values (the calculator makes expr and result agree, so a wrong step used a wrong
    operand or operation). A solution with no annotation at all has no checkable step: None.
    """
    for a in find_annotations(text):
        if a.result.strip() not in values:
            return a.end
    return None
