"""The paper's released per-problem results, shipped small so that its rows reproduce from a fresh clone.

OpenAI's grade-school-math repository (MIT) releases `example_model_solutions.jsonl`: for each of GSM8K's
1,319 test problems, the solution and `is_correct` flag of four GPT-3 runs (6B and 175B, fine-tuning and
verification). The paper's rows need only the flags, so `paper_reference.json` beside this module holds those
(one "0"/"1" string per model, in the file's order, which is GSM8K test.jsonl's) with each question's sha256
prefix to check the order against, the source and the MIT notice: about 20 KB instead of the file's 7 MB.

`released_file(path, say)` gives `gsmv.evaluate.evaluate_reference` a file to read: the named one when it
exists, else one in the released shape rebuilt from the shipped flags (solutions left out; said on `say`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from gsmv.artifacts import iter_jsonl
from gsmv.errors import GsmvError

SHIPPED = Path(__file__).with_name("paper_reference.json")
# evaluate.REFERENCE_MODELS, repeated here so that reading the shipped file needs no torch-side import.
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
RELEASED = ("https://github.com/openai/grade-school-math, "
            "grade_school_math/data/example_model_solutions.jsonl (MIT, with the solutions)")
LICENSE = """MIT License

Copyright (c) 2021 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def question_key(question: str) -> str:
    """The first 8 hex digits of the question's sha256: enough to check the order (unique on the 1,319)."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()[:8]


def derive(released: str | Path) -> dict:
    """The shipped file's content, from the released example_model_solutions.jsonl (how SHIPPED was made)."""
    keys: list[str] = []
    flags: dict[str, list[str]] = {m: [] for m in MODELS}
    for _, where, rec in iter_jsonl(Path(released)):
        try:
            keys.append(question_key(rec["question"]))
            for m in MODELS:
                flags[m].append("1" if rec[m]["is_correct"] is True else "0")
        except (KeyError, TypeError):
            fields = ", ".join(("question", *MODELS))
            raise GsmvError(f"{where}: not a record of example_model_solutions.jsonl ({fields})") from None
    return {"source": RELEASED, "derived": "each model's is_correct flag per problem, in the file's order",
            "license": LICENSE, "question_sha256_8": keys,
            "is_correct": {m: "".join(v) for m, v in flags.items()}}


def load(path: str | Path = SHIPPED) -> dict[str, list[bool]]:
    """model → its is_correct flags, one per GSM8K test problem in test.jsonl's order."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        n = len(data["question_sha256_8"])
        flags = {m: [c == "1" for c in data["is_correct"][m]] for m in MODELS}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GsmvError(f"{path}: not a readable paper-reference file ({type(e).__name__}: {e})") from None
    if any(len(v) != n for v in flags.values()):
        raise GsmvError(f"{path}: the models' flags are not one per question ({n} questions)")
    return flags


@contextlib.contextmanager
def released_file(path: str | None, say: Callable[[str], None]) -> Iterator[tuple[Path, str]]:
    """(a file in example_model_solutions.jsonl's shape, what to call its source): `path` itself when it
    exists; else, with a line on `say` naming where the full file comes from, the shipped flags written as such
    a file (questions as their hash, no solutions: evaluate_reference reads only the flags)."""
    if path and Path(path).is_file():
        yield Path(path), str(path)
        return
    flags = load()
    keys = json.loads(SHIPPED.read_text(encoding="utf-8"))["question_sha256_8"]
    where = "" if not path else f"{path} not found; "
    say(f"paper reference: {where}using gsmv's shipped flags ({SHIPPED.name}); the full file: {RELEASED}")
    with tempfile.TemporaryDirectory(prefix="gsmv-paper-") as tmp:
        out = Path(tmp) / "example_model_solutions.jsonl"
        with out.open("w", encoding="utf-8") as f:
            for i, key in enumerate(keys):
                models = {m: {"is_correct": flags[m][i]} for m in MODELS}
                f.write(json.dumps({"question": key, "ground_truth": "", **models}) + "\n")
        yield out, f"gsmv/data/{SHIPPED.name} (the is_correct flags of OpenAI's example_model_solutions.jsonl, MIT)"
