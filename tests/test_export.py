"""`gsmv export` and the TRL reward: the exported classifiers give gsmv's values exactly."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from gsmv import cli
from gsmv.data.gsm8k import format_prompt
from gsmv.errors import GsmvError
from gsmv.export import export, exported_values, load_exported, p_correct
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
        values = p_correct(model, logits)
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
            got = p_correct(model, model(input_ids=torch.tensor([s])).logits)[0, -1].item()
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
        got = torch.sigmoid(logits[0, 0] + bias) if to == "seq-cls" else p_correct(model, logits)[0, -1]
        assert got.item() == pytest.approx(r["score"], abs=1e-5)


SHORT_LIMIT = 40  # verifier.max_len of the copied run below: most smoke-synth test inputs are longer


@pytest.fixture(scope="module")
def short_limit_run(smoke_synth_run, tmp_path_factory):
    """A copy of the smoke-synth run whose verifier.max_len is SHORT_LIMIT, with the score stage run again at that
    limit: its stored scores are `gsmv score`'s numbers on inputs longer than max_len."""
    from gsmv import score
    from gsmv.artifacts import RunPaths
    from gsmv.config import load_config, to_yaml

    root = tmp_path_factory.mktemp("short")
    run = root / smoke_synth_run.name
    shutil.copytree(smoke_synth_run, run)
    cfg = load_config(run / "config.yaml", [f"out_dir={root}", f"verifier.max_len={SHORT_LIMIT}"])
    (run / "config.yaml").write_text(to_yaml(cfg))
    shutil.rmtree(RunPaths(run).scores("test"))
    score.main(cfg, "test")
    return run


def run_rows(run, n: int = 48) -> list[dict]:
    """The first n scored test samples of a run: prompt ids, sample, stored score, full input ids."""
    import pyarrow.parquet as pq

    from gsmv.artifacts import RunPaths, list_shards
    from gsmv.config import load_config
    from gsmv.data.tasks import load_split
    from gsmv.models.verifier import solution_ids

    paths = RunPaths(run)
    _, tok = load_verifier(paths.verifier_final)
    problems = {p.id: p for p in load_split(load_config(paths.config), "test")}
    samples = {(r["problem_id"], r["sample_idx"]): r for s in list_shards(paths.samples("test"))
               for r in pq.read_table(s, columns=["problem_id", "sample_idx", "tokens", "text", "finished"]).to_pylist()}
    rows = []
    for r in pq.read_table(list_shards(paths.scores("test"))[0]).to_pylist()[:n]:
        s = samples[(r["problem_id"], r["sample_idx"])]
        question = problems[r["problem_id"]].question
        ids = prompt_ids(tok, question) + solution_ids(s["tokens"], s["finished"], tok.eos_token_id)
        rows.append({**s, "question": question, "score": r["score"], "ids": ids})
    return rows


@pytest.mark.parametrize("to", ["seq-cls", "token-cls"])
def test_export_reads_like_score_past_max_len(short_limit_run, tmp_path, to):
    """Inputs longer than verifier.max_len: the export records the limit and exported_values cuts as `gsmv score`
    does, so it gives the stored scores; the whole input (what the export read before) does not."""
    out = tmp_path / to
    assert cli.main(["export", "--run", str(short_limit_run), "--to", to, "--out", str(out)]) == 0
    model, tok = load_exported(out)
    assert model.config.gsmv["max_len"] == SHORT_LIMIT and tok.model_max_length == SHORT_LIMIT
    assert f"input limit (tokens, kept from the end): {SHORT_LIMIT}" in (out / "README.md").read_text()
    rows = run_rows(short_limit_run)
    long = [r for r in rows if len(r["ids"]) > SHORT_LIMIT]
    assert len(long) >= 10
    got = exported_values(model, [r["ids"] for r in rows], batch_size=7)
    assert got == pytest.approx([r["score"] for r in rows], abs=1e-5)
    with torch.no_grad():
        whole = p_correct(model, model(input_ids=torch.tensor([long[0]["ids"]])).logits)
    assert whole.reshape(-1)[-1].item() != pytest.approx(long[0]["score"], abs=1e-5)
    # The tokenizer cuts as gsmv does when asked to (gsmv's tokenizers add no special tokens).
    text = format_prompt(long[0]["question"]) + long[0]["text"] + (tok.eos_token if long[0]["finished"] else "")
    assert tok.truncation_side == "left"
    assert tok(text, truncation=True)["input_ids"] == tok(text)["input_ids"][-SHORT_LIMIT:]


def test_trl_reward_reads_like_score_past_max_len(short_limit_run, tmp_path):
    """trl_reward on the run folder and on its export, given the sampler's ids (as TRL passes completion_ids, EOS
    included when sampled): the stored scores, long inputs included."""
    rows = run_rows(short_limit_run)
    prompts = [format_prompt(r["question"]) for r in rows]
    texts = [r["text"] for r in rows]
    _, tok = load_verifier(short_limit_run / "verifier" / "final")
    ids = [r["tokens"] + ([tok.eos_token_id] if r["finished"] else []) for r in rows]
    want = [r["score"] for r in rows]
    assert sum(len(r["ids"]) > SHORT_LIMIT for r in rows) >= 10
    assert trl_reward(short_limit_run)(prompts, texts, completion_ids=ids) == pytest.approx(want, abs=1e-5)
    out = tmp_path / "tc"
    assert cli.main(["export", "--run", str(short_limit_run), "--to", "token-cls", "--out", str(out)]) == 0
    assert trl_reward(out)(prompts, texts, completion_ids=ids) == pytest.approx(want, abs=1e-5)


def test_an_export_without_a_recorded_limit_is_refused(verifier_dir, tmp_path):
    out = export(verifier_dir, "token-cls", tmp_path / "tc")
    cfg = json.loads((out / "config.json").read_text())
    del cfg["gsmv"]["max_len"]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GsmvError, match="records no input limit"):
        trl_reward(out)


def test_pipelines_on_a_run_export_give_stored_scores(short_limit_run, tmp_path):
    """transformers' pipelines on the run's exports give the score stage's stored P(correct), inputs longer than
    verifier.max_len included: verifier_pipeline on seq-cls; the plain token-classification pipeline on token-cls
    (it truncates to the tokenizer's model_max_length, from the left, as gsmv score cuts), its last token."""
    from transformers import pipeline

    from gsmv.integrations import verifier_pipeline

    outs = {to: tmp_path / to for to in ("seq-cls", "token-cls")}
    for to, out in outs.items():
        assert cli.main(["export", "--run", str(short_limit_run), "--to", to, "--out", str(out)]) == 0
    _, tok = load_exported(outs["token-cls"])
    rows = []
    for r in run_rows(short_limit_run):
        text = format_prompt(r["question"]) + r["text"] + (tok.eos_token if r["finished"] else "")
        if tok(text)["input_ids"] == r["ids"]:  # the text encodes to the sampled ids (no calculator re-split)
            rows.append((text, r["score"], len(r["ids"]) > SHORT_LIMIT))
    assert sum(long for *_, long in rows) >= 5  # shorter inputs: test_exported_model_gives_gsmvs_values
    want = [s for _, s, _ in rows]
    seq = [r["score"] for r in verifier_pipeline(outs["seq-cls"])([t for t, *_ in rows])]
    pipe = pipeline("token-classification", model=str(outs["token-cls"]), ignore_labels=[])
    last = [_p_correct_of(pipe(t)[-1]) for t, *_ in rows]
    diff = {name: max(abs(a - b) for a, b in zip(got, want, strict=True)) for name, got in (("seq-cls", seq),
                                                                                           ("token-cls", last))}
    print(f"\n{len(rows)} rows ({sum(long for *_, long in rows)} past max_len): max |pipeline - stored| {diff}")
    assert seq == pytest.approx(want, abs=1e-5)
    assert last == pytest.approx(want, abs=1e-5)


def _p_correct_of(entity: dict) -> float:
    """P(correct) from one token of the token-classification pipeline: its label's score, or 1 - that."""
    return entity["score"] if entity["entity"] == "correct" else 1 - entity["score"]
