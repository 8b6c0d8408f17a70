"""`gsmv export` and the TRL reward: the exported classifiers give gsmv's values exactly."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from gsmv import cli
from gsmv.errors import GsmvError
from gsmv.export import export, load_exported
from gsmv.integrations import trl_reward
from gsmv.models.verifier import build_verifier, load_verifier, prompt_ids, score_sequences

QUESTIONS = ["Ana has 3 boxes with 4 pens in each. How many pens does she have?", "Bo had 9 cards and gave away 2."]
SOLUTIONS = ["Ana has 3*4=<<3*4=12>>12 pens.\n#### 12", "Bo has 9-2=<<9-2=7>>7 cards", "#### 7", ""]


@pytest.fixture(scope="module", params=["token", "linear", "other-family"])
def verifier_dir(request, tiny_llama_dir, tiny_gpt2_dir, tmp_path_factory):
    # other-family: a GPT-2 verifier of another vocabulary than the tiny Llama generator's, which reads samples as
    # text (Verifier.reads); exports and rewards take text, so they must give what scoring that text gives.
    if request.param == "other-family":
        ver, tok = build_verifier(tiny_gpt2_dir, head="token")
        ver.reads = "text"
    else:
        ver, tok = build_verifier(tiny_llama_dir, head=request.param)
    torch.manual_seed(0)
    with torch.no_grad():
        if ver.head == "token":
            ver.gain.fill_(0.7)
            ver.bias.fill_(-0.3)
        else:
            ver.linear.weight.normal_(std=0.2)
            ver.linear.bias.fill_(0.4)
    folder = tmp_path_factory.mktemp(f"ver_{request.param}")
    ver.save_pretrained(folder, tokenizer=tok)
    return folder


def _sequences(tok):
    seqs, starts = [], []
    for q in QUESTIONS:
        for s in SOLUTIONS:
            p = prompt_ids(tok, q)
            sol = tok(s, add_special_tokens=False)["input_ids"] if s else []
            for finished in (False, True):
                seq = p + sol + ([tok.eos_token_id] if finished else [])
                if len(seq) > len(p):
                    seqs.append(seq)
                    starts.append(len(p))
    return seqs, starts


@pytest.mark.parametrize("to", ["seq-cls", "token-cls"])
def test_exported_model_gives_gsmvs_values(verifier_dir, to, tmp_path):
    ver, tok = load_verifier(verifier_dir)
    seqs, starts = _sequences(tok)
    want = score_sequences(ver, seqs, starts, batch_size=4, pad_id=tok.pad_token_id)
    out = export(verifier_dir, to, tmp_path / "out")
    model, etok = load_exported(out)  # transformers' own classes, no gsmv code in the folder
    family = "GPT2" if type(ver.lm).__name__.startswith("GPT2") else "Llama"
    assert type(model).__name__ == family + ("ForSequenceClassification" if to == "seq-cls" else
                                             "ForTokenClassification")
    cfg = json.loads((out / "config.json").read_text())
    pad = cfg["pad_token_id"]
    # seq-cls finds the last token by the pad id, so it must never occur in input; token-cls reads positions.
    assert to == "token-cls" or all(pad not in s for s in seqs)
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])  # right padding, several lengths
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    if to == "seq-cls":
        got = torch.sigmoid(logits[:, 0] + cfg["value_bias"])
        for i, (v, _) in enumerate(want):
            assert got[i].item() == pytest.approx(v, abs=1e-5)
        # the logit alone ranks exactly as the value does
        order = sorted(range(len(seqs)), key=lambda i: want[i][0])
        assert sorted(range(len(seqs)), key=lambda i: logits[i, 0].item()) == order
    else:
        values = torch.sigmoid(logits[..., 0])
        for i, (v, per_token) in enumerate(want):
            assert values[i, len(seqs[i]) - 1].item() == pytest.approx(v, abs=1e-5)
            torch.testing.assert_close(values[i, starts[i]:len(seqs[i])], torch.tensor(per_token), atol=1e-5, rtol=0)
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: transformers\n")
    assert etok.pad_token_id == pad or to == "token-cls"


def test_trl_reward_formats_as_gsmv_scores(verifier_dir, tmp_path):
    ver, tok = load_verifier(verifier_dir)
    from gsmv.data.gsm8k import format_prompt

    prompts = [format_prompt(q) for q in QUESTIONS for _ in SOLUTIONS[:3]]
    completions = [s for _ in QUESTIONS for s in SOLUTIONS[:3]]
    seqs, starts = [], []
    for q in QUESTIONS:
        for s in SOLUTIONS[:3]:
            p = prompt_ids(tok, q)
            done = s.startswith("####") or "\n####" in s
            seqs.append(p + tok(s, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if done else []))
            starts.append(len(p))
    want = [v for v, _ in score_sequences(ver, seqs, starts, batch_size=8, pad_id=tok.pad_token_id)]
    reward = trl_reward(verifier_dir)
    assert reward(prompts=prompts, completions=completions) == pytest.approx(want, abs=1e-6)
    conversational = [[{"role": "assistant", "content": c}] for c in completions]
    assert reward(prompts, conversational, trainer_state=None) == pytest.approx(want, abs=1e-6)
    export_dir = export(verifier_dir, "token-cls", tmp_path / "tc")
    assert trl_reward(export_dir)(prompts, completions) == pytest.approx(want, abs=1e-5)
    finished = [True] * len(prompts)
    forced = trl_reward(verifier_dir)(prompts, completions, finished=finished)
    assert forced[1] != pytest.approx(want[1])  # "finished" adds EOS to the unfinished second completion
    with pytest.raises(GsmvError, match="2 prompts for 1 completions"):
        reward(prompts[:2], completions[:1])


def test_export_command_and_refusals(smoke_synth_run, tmp_path, capsys):
    out = tmp_path / "seq"
    assert cli.main(["export", "--run", str(smoke_synth_run), "--to", "seq-cls", "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "value_bias" in card
    assert cli.main(["export", "--run", str(smoke_synth_run), "--to", "seq-cls", "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    run = tmp_path / "run"
    shutil.copytree(smoke_synth_run, run)
    shutil.rmtree(run / "verifier" / "final")
    assert cli.main(["export", "--run", str(run), "--to", "token-cls", "--out", str(tmp_path / "x")]) == 2
    assert "no trained verifier" in capsys.readouterr().err


def test_model_folders_carry_a_model_card(smoke_synth_run):
    for folder, tag in [("generator/final", "- generator"), ("verifier/final", "- verifier")]:
        text = (smoke_synth_run / folder / "README.md").read_text()
        assert text.startswith("---\n") and tag in text and "## Input" in text
    meta = json.loads((smoke_synth_run / "verifier" / "final" / "verifier_config.json").read_text())
    assert "prompt_format" in meta and meta["gsmv_version"]


def test_random_ids_round_trip_through_export(verifier_dir, tmp_path):
    ver, tok = load_verifier(verifier_dir)
    rng = random.Random(0)
    seqs = [[rng.randrange(5, 200) for _ in range(rng.randrange(3, 20))] for _ in range(6)]
    want = score_sequences(ver, seqs, [1] * len(seqs), batch_size=6, pad_id=tok.pad_token_id)
    model, _ = load_exported(export(verifier_dir, "token-cls", tmp_path / "tc"))
    for s, (v, _) in zip(seqs, want, strict=True):
        with torch.no_grad():
            got = torch.sigmoid(model(input_ids=torch.tensor([s])).logits[0, -1, 0]).item()
        assert got == pytest.approx(v, abs=1e-5)


@pytest.mark.parametrize("to", ["seq-cls", "token-cls"])
def test_export_of_a_run_reproduces_its_score_stage(smoke_synth_run, tmp_path, to):
    """The exported classifier on the run's own test samples gives the values the score stage stored."""
    import pyarrow.parquet as pq

    from gsmv.artifacts import RunPaths, list_shards
    from gsmv.config import load_config
    from gsmv.data.tasks import load_split
    from gsmv.models.verifier import solution_ids

    paths = RunPaths(smoke_synth_run)
    out = tmp_path / to
    assert cli.main(["export", "--run", str(smoke_synth_run), "--to", to, "--out", str(out)]) == 0
    model, tok = load_exported(out)
    bias = json.loads((out / "config.json").read_text())["value_bias"]
    cfg = load_config(paths.config)
    limit = cfg.verifier.max_len
    problems = {p.id: p for p in load_split(cfg, "test")}
    samples = {(r["problem_id"], r["sample_idx"]): r for s in list_shards(paths.samples("test"))
               for r in pq.read_table(s, columns=["problem_id", "sample_idx", "tokens", "finished"]).to_pylist()}
    scores = pq.read_table(list_shards(paths.scores("test"))[0], columns=["problem_id", "sample_idx", "score"])
    rows = scores.to_pylist()[:24]
    assert any(samples[(r["problem_id"], r["sample_idx"])]["finished"] for r in rows)
    for r in rows:
        s = samples[(r["problem_id"], r["sample_idx"])]
        ids = prompt_ids(tok, problems[r["problem_id"]].question) + solution_ids(s["tokens"], s["finished"],
                                                                                 tok.eos_token_id)
        ids = ids[-limit:]  # the score stage reads at most verifier.max_len tokens, cut from the left
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits.float()
        logit = logits[0, 0] + bias if to == "seq-cls" else logits[0, -1, 0]
        assert torch.sigmoid(logit).item() == pytest.approx(r["score"], abs=1e-5)
