"""gsmv.integrations: the TRL reward's finished rule against the real sampler, and transformers' pipelines on
exports giving gsmv's values (gsmv.export)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoTokenizer, pipeline

from gsmv import cli
from gsmv.data.gsm8k import format_prompt
from gsmv.export import export, load_exported
from gsmv.integrations import solution_ids, trl_reward, verifier_pipeline
from gsmv.models.loading import load_model_and_tokenizer
from gsmv.models.verifier import build_verifier, load_verifier, prompt_ids, score_sequences
from gsmv.models.verifier import solution_ids as sample_ids
from gsmv.sampling.base import Request, SamplingParams, request_seed
from gsmv.sampling.hf import HFSampler

QUESTIONS = ["Raj has 5 boxes with 3 coins in each. How many coins are there?", "Lee has 6 books.",
             "Sam has 13 coins, buys 20 more and then gives away 3. How many coins are left?"]
SOLUTIONS = ["Raj has 5*3=<<5*3=15>>15 coins.\n#### 15", "Lee has", "#### 6"]


def _saved_verifier(lm_dir, head: str, folder):
    ver, tok = build_verifier(lm_dir, head=head)
    torch.manual_seed(0)
    with torch.no_grad():
        if head == "token":
            ver.gain.fill_(0.7)
            ver.bias.fill_(-0.3)
        else:
            ver.linear.weight.normal_(std=0.2)
            ver.linear.bias.fill_(0.4)
    ver.save_pretrained(folder, tokenizer=tok)
    return folder


def _generator_with_eos(lm_dir):
    """The tiny Llama with larger weights (lively logits) and EOS as likely as its most sampled token, so some
    samples stop at EOS and others at max_new_tokens."""
    model, tok = load_model_and_tokenizer(lm_dir, dtype=torch.float32, device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    probe = HFSampler(model.eval(), tok, SamplingParams(temperature=1.0, max_new_tokens=16), batch_size=8)
    counts = torch.bincount(torch.tensor([t for s in probe.generate(_requests(tok, 2)) for t in s.tokens]))
    with torch.no_grad():
        out = model.get_output_embeddings().weight
        out[tok.eos_token_id] = out[int(counts.argmax())]
    return model, tok


def _requests(tok, n: int) -> list[Request]:
    return [Request(f"p{i}", j, tuple(prompt_ids(tok, q)), request_seed(0, f"p{i}", j), reference="15")
            for i, q in enumerate(QUESTIONS) for j in range(n)]


def test_finished_rule_is_the_samplers_flag(tiny_llama_dir, tmp_path):
    """On samples of the real sampler, with the ids TRL passes (the sampled tokens, EOS included when sampled),
    the reward's finished rule is the sampler's flag and its values are the score stage's."""
    model, tok = _generator_with_eos(tiny_llama_dir)
    params = SamplingParams(temperature=1.0, max_new_tokens=20, calculator=True)
    samples = list(HFSampler(model, tok, params, batch_size=8).generate(_requests(tok, 6)))
    assert {s.finished for s in samples} == {True, False}
    eos = tok.eos_token_id
    given = [s.tokens + ([eos] if s.finished else []) for s in samples]
    for s, ids in zip(samples, given, strict=True):
        assert solution_ids(tok, s.text, completion_ids=ids) == (sample_ids(s.tokens, s.finished, eos), s.finished)
    folder = _saved_verifier(tiny_llama_dir, "token", tmp_path / "ver")
    ver, vtok = load_verifier(folder)
    prompts = {f"p{i}": q for i, q in enumerate(QUESTIONS)}
    seqs = [prompt_ids(vtok, prompts[s.problem_id]) + sample_ids(s.tokens, s.finished, eos) for s in samples]
    want = [v for v, _ in score_sequences(ver, seqs, [1] * len(seqs), batch_size=8, pad_id=vtok.pad_token_id)]
    got = trl_reward(folder)([format_prompt(prompts[s.problem_id]) for s in samples], [s.text for s in samples],
                             completion_ids=given)
    assert got == pytest.approx(want, abs=1e-6)


def test_text_rule_without_ids(tiny_llama_dir):
    """Text alone: finished when the final-answer line is reached (a guess, documented with its measured
    disagreement); finished= overrides it."""
    _, tok = load_model_and_tokenizer(tiny_llama_dir, dtype=torch.float32, device="cpu")
    assert [solution_ids(tok, s)[1] for s in SOLUTIONS] == [True, False, True]
    assert solution_ids(tok, SOLUTIONS[1], finished=True)[1] is True
    # ids of another vocabulary (they do not decode to the text) are not read
    other = [3, 4, 5]
    assert solution_ids(tok, SOLUTIONS[0], completion_ids=other)[0][:-1] == tok(SOLUTIONS[0])["input_ids"]


def _inputs(tok):
    """(text, ids) pairs: the pipeline's input text and the ids gsmv scores, equal encodings."""
    out = []
    for q in QUESTIONS:
        for s in SOLUTIONS:
            for finished in (False, True):
                text = format_prompt(q) + s + (tok.eos_token if finished else "")
                ids = prompt_ids(tok, q) + tok(s, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id]
                                                                                         if finished else [])
                if tok(text)["input_ids"] == ids:
                    out.append((text, ids))
    assert len(out) >= 12
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_text_classification_pipeline_gives_p_correct(family, tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    """GPT-2 (its final LayerNorm has a bias): the plain pipeline returns P(correct). Llama (RMSNorm, no bias
    after the trunk): the plain pipeline shows the logit less value_bias under the label "logit", and
    verifier_pipeline returns P(correct)."""
    folder = _saved_verifier(tiny_gpt2_dir if family == "gpt2" else tiny_llama_dir, "token", tmp_path / "ver")
    ver, tok = load_verifier(folder)
    pairs = _inputs(tok)
    want = [v for v, _ in score_sequences(ver, [i for _, i in pairs], [1] * len(pairs), batch_size=8,
                                          pad_id=tok.pad_token_id)]
    out = export(folder, "seq-cls", tmp_path / "seq")
    plain = pipeline("text-classification", model=str(out))
    got = plain([t for t, _ in pairs])
    cfg = json.loads((out / "config.json").read_text())
    if family == "gpt2":
        assert cfg["value_bias"] == 0.0 and {r["label"] for r in got} == {"correct"}
        assert [r["score"] for r in got] == pytest.approx(want, abs=1e-5)
    else:
        assert cfg["value_bias"] != 0.0 and {r["label"] for r in got} == {"logit"}
        probs = torch.sigmoid(torch.tensor([r["score"] for r in got]) + cfg["value_bias"]).tolist()
        assert probs == pytest.approx(want, abs=1e-5)
    assert [r["score"] for r in verifier_pipeline(out)([t for t, _ in pairs])] == pytest.approx(want, abs=1e-5)


def test_token_classification_pipeline_gives_values(verifier_llama_dir, tmp_path):
    """pipeline("token-classification", ignore_labels=[]) on a token-cls export: per token the label "correct"
    with P(correct), or "incorrect" with 1 - P(correct): gsmv's per-token values."""
    ver, tok = load_verifier(verifier_llama_dir)
    pairs = _inputs(tok)
    want = score_sequences(ver, [i for _, i in pairs], [0] * len(pairs), batch_size=8, pad_id=tok.pad_token_id)
    pipe = pipeline("token-classification", model=str(export(verifier_llama_dir, "token-cls", tmp_path / "tc")),
                    ignore_labels=[])
    for (text, ids), (_, per_token) in zip(pairs, want, strict=True):
        got = [e["score"] if e["entity"] == "correct" else 1 - e["score"] for e in pipe(text)]
        assert len(got) == len(ids)
        assert got == pytest.approx(per_token.tolist(), abs=1e-5)


@pytest.fixture
def verifier_llama_dir(tiny_llama_dir, tmp_path):
    return _saved_verifier(tiny_llama_dir, "token", tmp_path / "ver")


def test_seq_cls_export_of_a_linear_head_whose_pad_is_eos(tiny_llama_dir, tmp_path):
    """A Llama-shaped LM whose tokenizer pads with EOS (SmolLM2): the seq-cls export adds a pad token that never
    occurs, so the class reads a finished solution at its EOS, in right-padded batches too."""
    lm_dir = tmp_path / "lm"
    shutil.copytree(tiny_llama_dir, lm_dir)
    tok = AutoTokenizer.from_pretrained(lm_dir)
    tok.pad_token = tok.eos_token
    tok.save_pretrained(lm_dir)
    folder = _saved_verifier(lm_dir, "linear", tmp_path / "ver")
    ver, vtok = load_verifier(folder)
    assert vtok.pad_token_id == vtok.eos_token_id
    pairs = _inputs(vtok)
    seqs = [i for _, i in pairs]
    want = [v for v, _ in score_sequences(ver, seqs, [1] * len(seqs), batch_size=8, pad_id=vtok.pad_token_id)]
    out = export(folder, "seq-cls", tmp_path / "seq")
    model, etok = load_exported(out)
    pad = model.config.pad_token_id
    assert pad == etok.pad_token_id != etok.eos_token_id and all(pad not in s for s in seqs)
    batch = etok.pad({"input_ids": seqs}, return_tensors="pt")  # the tokenizer's own padding: right, with pad
    with torch.no_grad():
        logits = model(**batch).logits[:, 0]
    assert torch.sigmoid(logits + model.config.value_bias).tolist() == pytest.approx(want, abs=1e-5)
    assert [r["score"] for r in verifier_pipeline(out)([t for t, _ in pairs])] == pytest.approx(want, abs=1e-5)


def test_export_is_atomic_when_killed_mid_write(verifier_llama_dir, tmp_path):
    """A process killed after the weights are written (os._exit: no clean-up runs, as with kill -9) leaves no
    folder under --out, only a temporary one beside it, which the next export removes."""
    import subprocess
    import sys

    out = tmp_path / "seq"
    crash = ("import os, sys, transformers\n"
             "transformers.PreTrainedTokenizerBase.save_pretrained = lambda *a, **k: os._exit(9)\n"
             "from gsmv.export import export\n"
             f"export({str(verifier_llama_dir)!r}, 'seq-cls', {str(out)!r})\n")
    proc = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    left = list(tmp_path.glob(".seq.export-*.tmp"))
    assert not out.exists() and len(left) == 1 and (left[0] / "config.json").is_file()
    assert cli.main(["export", "--run", str(tmp_path / "none"), "--to", "seq-cls", "--out", str(out)]) == 2
    export(verifier_llama_dir, "seq-cls", out)
    assert not list(tmp_path.glob(".seq.export-*.tmp"))
    load_exported(out)


def test_reexport_says_why_it_refuses(verifier_llama_dir, tmp_path, capsys):
    out = export(verifier_llama_dir, "token-cls", tmp_path / "tc")
    with pytest.raises(Exception, match="holds an export already"):
        export(verifier_llama_dir, "token-cls", out)
    (tmp_path / "empty").mkdir()
    export(verifier_llama_dir, "token-cls", tmp_path / "empty")  # an empty folder is fine
    assert (tmp_path / "empty" / "config.json").is_file()


def test_export_is_quiet_unless_asked(verifier_llama_dir, tmp_path, capfd):
    """The libraries' loading bars ("Loading weights") are off during an export, then back as they were."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    export(verifier_llama_dir, "token-cls", tmp_path / "a", progress=True)
    loud = capfd.readouterr().err
    export(verifier_llama_dir, "token-cls", tmp_path / "b")
    quiet = capfd.readouterr().err
    assert "Loading weights" in loud and "Loading weights" not in quiet
    assert hf_logging.is_progress_bar_enabled()
