"""The score stage: mirrored shards, values that match the model, resume, and two-process sharding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sample_shards import labelled_rows, write_shards

from gsmv import score
from gsmv.artifacts import RunPaths, list_shards, read_metrics, read_shards
from gsmv.data.tasks import load_split
from gsmv.errors import GsmvError
from gsmv.models.verifier import build_verifier, load_verifier, prompt_ids


@pytest.fixture
def scored_run(tiny_cfg, tiny_llama_dir):
    """A run folder with a (random) verifier and 3 test sample shards of 4 problems × 3 samples."""
    paths = RunPaths(tiny_cfg.run_dir)
    ver, tok = build_verifier(tiny_llama_dir, head="token")
    with torch.no_grad():
        ver.gain.fill_(0.8)
        ver.bias.fill_(2.0)
    ver.save_pretrained(paths.verifier_final)
    tiny_cfg.data.test_limit = 12
    test = load_split(tiny_cfg, "test")
    rows = labelled_rows(test, tok, 3, lambda i, j: (i + j) % 2 == 0)
    rows[5]["tokens"] = []  # an empty finished solution: the verifier reads only the EOS
    rows[7]["finished"] = False  # cut at max_new_tokens: no EOS is appended
    write_shards(paths.samples("test"), rows, rows_per_shard=12)
    return tiny_cfg, paths, rows


def test_score_shards_mirror_samples_and_match_the_model(scored_run):
    cfg, paths, rows = scored_run
    score.main(cfg, "test")
    assert [p.name for p in list_shards(paths.scores("test"))] == [p.name for p in list_shards(paths.samples("test"))]
    t = read_shards(paths.scores("test")).table
    assert t.schema.field("score").type == pa.float32()
    assert t.schema.field("token_values").type == pa.list_(pa.float32())
    assert t.column("problem_id").to_pylist() == [r["problem_id"] for r in rows]
    assert t.column("sample_idx").to_pylist() == [r["sample_idx"] for r in rows]

    ver, tok = load_verifier(paths.verifier_final)
    questions = {p.id: p.question for p in load_split(cfg, "test")}
    scores = t.column("score").to_numpy()
    token_values = t.column("token_values").to_pylist()
    for i in (0, 5, 7, len(rows) - 1):
        prompt = prompt_ids(tok, questions[rows[i]["problem_id"]])
        toks = rows[i]["tokens"]
        seq = prompt + toks + ([tok.eos_token_id] if rows[i]["finished"] else [])
        with torch.no_grad():
            v = ver(torch.tensor([seq]), return_logits=False).values[0].numpy()
        # The score is the value at the final token: EOS for a finished sample, else its last token.
        assert scores[i] == pytest.approx(float(v[-1]), abs=1e-5)
        # token_values line up with the sample's own tokens.
        assert len(token_values[i]) == len(toks)
        np.testing.assert_allclose(token_values[i], v[len(prompt):len(prompt) + len(toks)], atol=1e-5)
    assert token_values[7][-1] == pytest.approx(scores[7])  # unfinished: the last sampled token
    assert token_values[0][-1] != pytest.approx(scores[0])  # finished: EOS comes after the last token


def test_score_resumes_finished_shards(scored_run):
    cfg, paths, _ = scored_run
    score.main(cfg, "test")
    shards = list_shards(paths.scores("test"))
    inodes = {p: p.stat().st_ino for p in shards}
    before = pq.read_table(shards[1])
    shards[1].unlink()
    out = score.main(cfg, "test")
    assert out["scored_here"] == 1
    assert shards[0].stat().st_ino == inodes[shards[0]] and shards[2].stat().st_ino == inodes[shards[2]]
    assert pq.read_table(shards[1]).equals(before)


def test_score_unknown_problem_is_an_error(scored_run):
    cfg, paths, _ = scored_run
    cfg.data.test_limit = 2  # the samples now name problems outside the split
    with pytest.raises(GsmvError, match=r"shard-00000.parquet: row \d+: problem_id 'test-00002'"):
        score.main(cfg, "test")


def test_score_without_verifier_or_samples(tiny_cfg):
    with pytest.raises(GsmvError, match="no sample shards"):
        score.main(tiny_cfg, "test")


SCRIPT = """
import sys
from gsmv.config import load_config
from gsmv import score
cfg = load_config(None, sys.argv[1:])
score.main(cfg, "test")
"""


def test_two_processes_give_the_same_scores(scored_run, tmp_path):
    cfg, paths, _ = scored_run
    score.main(cfg, "test")
    one = read_shards(paths.scores("test")).table
    # Same run folder contents, scored by two ranks.
    two_root = tmp_path / "two"
    for sub in ("verifier", "samples"):
        src = paths.root / sub
        (two_root / sub).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, two_root / sub)
    script = tmp_path / "score_script.py"
    script.write_text(SCRIPT)
    overrides = [f"data.dir={cfg.data.dir}", f"out_dir={tmp_path}", "name=two", "data.val_size=20",
                 "data.test_limit=12", "device=cpu", "threads=1", "score.batch_size=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(root / "configs/accelerate/cpu_ddp.yaml"), "--main_process_port", "0", str(script), *overrides],
        capture_output=True, text=True, env=env, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = read_shards(two_root / "scores" / "test").table
    # Rank 0 scored shards 0 and 2 only: the work was really split.
    assert [r["shards"] for r in read_metrics(two_root / "metrics.jsonl", "score")] == [2]
    assert two.column("problem_id").equals(one.column("problem_id"))
    np.testing.assert_allclose(two.column("score").to_numpy(), one.column("score").to_numpy(), atol=1e-6)
    for a, b in zip(two.column("token_values").to_pylist(), one.column("token_values").to_pylist(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_verifier_that_reads_text_scores_each_samples_text_in_its_own_ids(tiny_cfg, tiny_llama_dir, tiny_gpt2_dir):
    # Samples in the tiny Llama's ids, a verifier of another vocabulary (GPT-2 style): the score is the value
    # at the end of question + the sample's text in the verifier's own ids (+ its EOS when finished).
    from transformers import AutoTokenizer

    from gsmv.models.tokenizer import encode_solution

    paths = RunPaths(tiny_cfg.run_dir)
    ver, vtok = build_verifier(tiny_gpt2_dir, head="token")
    ver.reads = "text"
    with torch.no_grad():
        ver.gain.fill_(0.8)
    ver.save_pretrained(paths.verifier_final)
    tiny_cfg.data.test_limit = 4
    test = load_split(tiny_cfg, "test")
    gtok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    rows = labelled_rows(test, gtok, 2, lambda i, j: j == 0)
    rows[1]["finished"] = False
    write_shards(paths.samples("test"), rows, rows_per_shard=8)
    score.main(tiny_cfg, "test")
    t = read_shards(paths.scores("test")).table
    questions = {p.id: p.question for p in test}
    loaded, tok = load_verifier(paths.verifier_final)
    assert loaded.reads == "text"
    for i, r in enumerate(rows):
        seq = prompt_ids(tok, questions[r["problem_id"]]) + encode_solution(tok, r["text"], eos=r["finished"])
        with torch.no_grad():
            want = float(loaded(torch.tensor([seq]), return_logits=False).values[0, -1])
        assert t.column("score")[i].as_py() == pytest.approx(want, abs=1e-5)
        assert t.column("token_values")[i].as_py() == []  # its tokens are not the sample's: no per-token values
