"""Build sample shards (the sampler's Parquet schema) without running the sampler.

Used by the verifier, label and score tests; `tests/` is on sys.path through conftest.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from gsmv.artifacts import shard_path, write_parquet
from gsmv.data.answers import extract_answer
from gsmv.data.gsm8k import Problem
from gsmv.sample import SAMPLE_SCHEMA  # the stage's own schema: test shards break when it changes


def sample_row(problem_id: str, sample_idx: int, text: str, tokens: Sequence[int],
               is_correct: bool | None) -> dict:
    return {
        "problem_id": problem_id,
        "sample_idx": sample_idx,
        "text": text,
        "tokens": list(tokens),
        "n_tokens": len(tokens),
        "final_answer": extract_answer(text),
        "is_correct": is_correct,
        "calc_calls": text.count("<<"),
        "forced": [False] * len(tokens),
        "finished": True,
    }


def write_shards(folder: Path, rows: list[dict], rows_per_shard: int) -> list[Path]:
    out = []
    for k, i in enumerate(range(0, len(rows), rows_per_shard)):
        chunk = rows[i:i + rows_per_shard]
        table = pa.Table.from_pylist(chunk, schema=SAMPLE_SCHEMA)
        p = shard_path(folder, k)
        write_parquet(p, table)
        out.append(p)
    return out


def wrong_answer(solution: str) -> str:
    """The reference solution with its final `#### N` changed to another number."""
    m = re.search(r"#### (-?\d+)\s*$", solution)
    assert m is not None, solution
    return solution[:m.start(1)] + str(int(m.group(1)) + 7)


def hedged_wrong_answer(solution: str) -> str:
    """A wrong solution with a visible tell: it opens with "Maybe" and ends on a wrong answer."""
    return "Maybe " + wrong_answer(solution)


def tokens_of(tokenizer, text: str) -> list[int]:
    """Solution tokens as the sampler stores them: the text's ids, EOS excluded (`finished` says it was reached)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def labelled_rows(problems: Sequence[Problem], tokenizer, n_per_problem: int,
                  correct: Callable[[int, int], bool], wrong: Callable[[str], str] = wrong_answer) -> list[dict]:
    """n samples per problem: sample j of problem i is the reference solution when correct(i, j), else
    `wrong(reference)`. Labels are the truth."""
    rows = []
    for i, p in enumerate(problems):
        for j in range(n_per_problem):
            ok = correct(i, j)
            text = p.solution if ok else wrong(p.solution)
            rows.append(sample_row(p.id, j, text, tokens_of(tokenizer, text), ok))
    return rows
