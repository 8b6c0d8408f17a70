"""GSM8K's record format: Problem, the prompt, and loading a jsonl file or the HF dataset.

A record is `{"question": ..., "answer": "...<<48/2=24>>24 ...\\n#### 72"}`. Splits (val carved
from train, limits) and the choice of source live in gsmv.data.tasks; ids are `{split}-{line:05d}`,
so every problem is traceable to its source line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsmv.artifacts import iter_jsonl
from gsmv.data.answers import extract_answer
from gsmv.errors import GsmvError

SPLITS = ("train", "val", "test")
HF_DATASET = ("openai/gsm8k", "main")
_FIELDS = ("question", "answer")


@dataclass(frozen=True)
class Problem:
    id: str  # source split + 0-based index in the source file: "train-00012"
    question: str
    solution: str  # the reference answer text: annotations and the final `#### N` line
    answer: str  # the normalized final answer ("72")


def format_prompt(question: str) -> str:
    """The model input for a question; the training target is solution + EOS."""
    return question + "\n"


def _problem(rec: Any, split: str, index: int, where: str) -> Problem:
    """One record → Problem, or a one-line GsmvError that starts with `where` (file:line)."""
    if not isinstance(rec, Mapping):
        raise GsmvError(f"{where}: expected a JSON object with 'question' and 'answer', got {type(rec).__name__}")
    for name in _FIELDS:
        if name not in rec:
            raise GsmvError(f"{where}: missing field '{name}'")
        if not isinstance(rec[name], str):
            raise GsmvError(f"{where}: field '{name}' must be a string, got {type(rec[name]).__name__}")
    answer = extract_answer(rec["answer"])
    if answer is None:
        why = "no '####' line" if "####" not in rec["answer"] else "no number after the last '####'"
        raise GsmvError(f"{where}: field 'answer' has {why}")
    return Problem(id=f"{split}-{index:05d}", question=rec["question"], solution=rec["answer"], answer=answer)


def load_jsonl(path: str | Path, split: str) -> list[Problem]:
    """Problems of one GSM8K-format jsonl file; ids are `{split}-{line index:05d}`.

    Blank lines are skipped (they keep their index, so ids always match line numbers).
    """
    path = Path(path)
    if not path.is_file():
        raise GsmvError(
            f"{path}: GSM8K file not found; set data.dir (or the GSMV_DATA_DIR environment variable) "
            "to a folder with train.jsonl and test.jsonl"
        )
    return [_problem(rec, split, i, where) for i, where, rec in iter_jsonl(path)]


def load_hf(split: str) -> list[Problem]:
    """Problems of the Hugging Face `openai/gsm8k` (config `main`) split, through `datasets`."""
    try:
        import datasets
    except ImportError:
        raise GsmvError("data.source=hf needs the `datasets` package: pip install 'gsmv[hf]'") from None
    try:
        ds = datasets.load_dataset(*HF_DATASET)
    except Exception as e:  # noqa: BLE001 - network, hub and cache errors come in many types
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GsmvError(f"{HF_DATASET[0]}: cannot load the dataset ({msg}); use data.source=local") from None
    if split not in ds:
        raise GsmvError(f"{HF_DATASET[0]}: no split '{split}' (has {', '.join(ds.keys())})")
    rows: Iterable[Any] = ds[split]
    return [_problem(rec, split, i, f"{HF_DATASET[0]}:{split}:{i + 1}") for i, rec in enumerate(rows)]
