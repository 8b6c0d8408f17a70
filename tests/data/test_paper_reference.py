"""gsmv.data.paper_reference: the paper's per-problem flags ship, so its rows reproduce from a fresh clone."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from gsmv.config import RunConfig
from gsmv.data import paper_reference as pr
from gsmv.data.tasks import data_dir
from gsmv.evaluate import evaluate_reference

ROOT = Path(__file__).resolve().parents[2]
RELEASED = data_dir(RunConfig()) / "example_model_solutions.jsonl"


def test_shipped_flags_give_the_papers_numbers():
    flags = pr.load()
    assert {m: len(v) for m, v in flags.items()} == dict.fromkeys(pr.MODELS, 1319)
    got = {m: round(100 * sum(v) / len(v), 1) for m, v in flags.items()}
    assert got == {"6b_finetuning": 21.7, "6b_verification": 39.0, "175b_finetuning": 34.7,
                   "175b_verification": 56.3}


def test_shipped_file_is_small_licensed_and_package_data():
    assert pr.SHIPPED.stat().st_size < 100_000
    data = json.loads(pr.SHIPPED.read_text())
    assert "MIT License" in data["license"] and "Copyright (c) 2021 OpenAI" in data["license"]
    assert "openai/grade-school-math" in data["source"]
    assert len(set(data["question_sha256_8"])) == 1319  # the hash prefixes tell the problems apart
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "data/paper_reference.json" in package_data["gsmv"]


def test_the_rebuilt_file_evaluates_as_the_shipped_flags_say(tmp_path):
    lines = []
    with pr.released_file(None, lines.append) as (path, source):
        res = evaluate_reference(path, bootstrap=50)
    assert not path.exists()  # a temporary file
    assert len(lines) == 1 and pr.RELEASED in lines[0] and "paper_reference.json" in source
    flags = pr.load()
    assert {m: res["models"][m]["value"] for m in pr.MODELS} == {
        m: pytest.approx(sum(v) / len(v), abs=1e-6) for m, v in flags.items()}
    with pr.released_file(str(tmp_path / "missing.jsonl"), lines.append) as (path, _):
        assert path.is_file()
    assert "missing.jsonl not found" in lines[1]


def test_a_bad_shipped_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "ref.json"
    bad.write_text(json.dumps({"question_sha256_8": ["a", "b"], "is_correct": dict.fromkeys(pr.MODELS, "1")}))
    with pytest.raises(pr.GsmvError, match="not one per question"):
        pr.load(bad)
    bad.write_text("{")
    with pytest.raises(pr.GsmvError, match="not a readable paper-reference file"):
        pr.load(bad)


@pytest.mark.skipif(not RELEASED.is_file(), reason="example_model_solutions.jsonl not beside the checkout")
def test_shipped_flags_equal_the_released_files():
    assert pr.derive(RELEASED) == json.loads(pr.SHIPPED.read_text())
    test = [json.loads(line)["question"] for line in (RELEASED.parent / "test.jsonl").open()]
    assert [pr.question_key(q) for q in test] == json.loads(pr.SHIPPED.read_text())["question_sha256_8"]
    with pr.released_file(None, lambda _: None) as (path, _):
        shipped = evaluate_reference(path)
    full = evaluate_reference(RELEASED)
    assert {**shipped, "source": None} == {**full, "source": None}  # every number, CIs included
