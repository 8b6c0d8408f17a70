"""Verifier training: loss masks, the LM switch, metrics, a real learning run, resume, init, two processes."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sample_shards import hedged_wrong_answer, labelled_rows, tokens_of, write_shards
from tiny_overrides import TINY_OVERRIDES
from transformers import AutoTokenizer

from gsmv.artifacts import RunPaths, read_metrics, read_shards
from gsmv.data.tasks import load_split
from gsmv.errors import GsmvError
from gsmv.models.loading import train_top_layers
from gsmv.models.verifier import build_verifier, load_verifier, prompt_ids
from gsmv.train import verifier as tv

# ---------------------------------------------------------------- masks and losses

PROMPT = [11, 12, 13, 14]
SOLUTION = [21, 22, 23]


def test_token_level_example_masks():
    ex, cut = tv.make_example(PROMPT, SOLUTION, 1.0, max_len=100, level="token")
    assert not cut
    assert ex["input_ids"] == PROMPT + SOLUTION
    assert ex["value_mask"] == [0, 0, 0, 0, 1, 1, 1]
    assert ex["labels"] == [-100, -100, -100, -100, 21, 22, 23]
    assert ex["target"] == [1.0] * 7


def test_value_example_without_lm_targets():
    ex, _ = tv.make_example(PROMPT, SOLUTION, 1.0, max_len=100, level="token", lm=False)
    assert ex["labels"] == [-100] * 7 and ex["value_mask"] == [0, 0, 0, 0, 1, 1, 1]


def test_process_targets_drop_to_zero_at_the_first_wrong_step():
    # The wrong step ends with solution token 1: the value target is 1 before it and 0 from it on,
    # whatever the outcome label says (a right answer reached by a wrong step is a false positive).
    ex, _ = tv.make_example(PROMPT, SOLUTION, 1.0, max_len=100, level="token", wrong_from=1)
    assert ex["target"] == [1.0] * 5 + [0.0] * 2
    ex, _ = tv.make_example(PROMPT, SOLUTION, 1.0, max_len=5, level="token", wrong_from=1)  # cut from the left
    assert ex["input_ids"] == [13, 14, 21, 22, 23] and ex["target"] == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_lm_example_carries_no_value():
    ex = tv.make_lm_example(PROMPT, SOLUTION, max_len=100)
    assert ex["labels"] == [-100] * 4 + SOLUTION and ex["value_mask"] == [0] * 7
    b = tv.collate_fn(pad_id=0)([ex])
    z = torch.randn(1, 7, requires_grad=True)
    loss, stats = tv.verifier_loss(z, None, b, loss="mse", lm_weight=0.0)
    assert loss.item() == 0.0 and stats["tokens"] == 0  # no NaN from an empty mean


def test_wrong_step_token_finds_the_token_that_ends_the_step(tiny_tokenizer):
    text = "Ann has 3+4 = <<3+4=7>>7 pens.\nBo has 7*2 = <<7*2=15>>15 pens.\n#### 15"
    toks = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    from gsmv.data.tasks import first_wrong_step
    from gsmv.sampling.base import decode

    end = first_wrong_step(text, frozenset({"7", "14"}))
    assert text[:end].endswith("=15>>")
    k = tv.wrong_step_token(tiny_tokenizer, toks, end)
    assert len(decode(tiny_tokenizer, toks[:k + 1])) >= end > len(decode(tiny_tokenizer, toks[:k]))


def test_solution_level_example_masks():
    ex, _ = tv.make_example(PROMPT, SOLUTION, 0.0, max_len=100, level="solution")
    assert ex["value_mask"] == [0, 0, 0, 0, 0, 0, 1]
    assert ex["labels"] == [-100, -100, -100, -100, 21, 22, 23]  # the LM loss still covers the solution


def test_truncation_keeps_the_end():
    ex, cut = tv.make_example(PROMPT, SOLUTION, 1.0, max_len=5, level="token")
    assert cut and ex["input_ids"] == [13, 14, 21, 22, 23]
    assert ex["value_mask"] == [0, 0, 1, 1, 1]
    ex, _ = tv.make_example(PROMPT, SOLUTION, 1.0, max_len=2, level="token")
    assert ex["input_ids"] == [22, 23] and ex["value_mask"] == [1, 1] and ex["labels"] == [22, 23]


def test_empty_solution_is_valued_at_the_last_token():
    for level in ("token", "solution"):
        ex, _ = tv.make_example(PROMPT, [], 0.0, max_len=100, level=level)
        assert ex["value_mask"] == [0, 0, 0, 1] and ex["labels"] == [-100] * 4


def _batch(level: str) -> dict:
    exs = [tv.make_example(PROMPT, SOLUTION, 1.0, max_len=100, level=level)[0],
           tv.make_example(PROMPT[:2], SOLUTION[:2], 0.0, max_len=100, level=level)[0]]
    return tv.collate_fn(pad_id=0)(exs)


def test_collate_pads_masks_and_targets():
    b = _batch("token")
    assert b["value_mask"].tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]]
    assert b["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    assert b["labels"][1].tolist() == [-100, -100, 21, 22, -100, -100, -100]
    assert b["target"].tolist() == [[1.0] * 7, [0.0] * 7]


def test_lm_sources_are_the_positions_before_solution_tokens():
    b = _batch("token")  # width 7: row 1 starts at flat index 7
    assert b["lm_src"].tolist() == [3, 4, 5, 8, 9]
    assert b["lm_tgt"].tolist() == [21, 22, 23, 21, 22]
    assert b["value_idx"].tolist() == [4, 5, 6, 9, 10] and b["last_idx"].tolist() == [6, 10]


@pytest.mark.parametrize("level", ["token", "solution"])
def test_value_loss_is_a_mean_over_the_masked_positions(level):
    b = _batch(level)
    torch.manual_seed(0)
    z = torch.randn(2, 7)
    loss, stats = tv.verifier_loss(z, None, b, loss="mse", lm_weight=0.0)
    if level == "token":
        pos = [(0, 4, 1.0), (0, 5, 1.0), (0, 6, 1.0), (1, 2, 0.0), (1, 3, 0.0)]
    else:
        pos = [(0, 6, 1.0), (1, 3, 0.0)]
    want = np.mean([(torch.sigmoid(z[i, t]).item() - y) ** 2 for i, t, y in pos])
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert stats["tokens"] == len(pos)
    bce, _ = tv.verifier_loss(z, None, b, loss="bce", lm_weight=0.0)
    want_bce = np.mean([-(y * math.log(torch.sigmoid(z[i, t]).item()) + (1 - y) * math.log(1 - torch.sigmoid(z[i, t]).item()))
                        for i, t, y in pos])
    assert bce.item() == pytest.approx(want_bce, rel=1e-5)


def test_rank_loss_pairs_right_and_wrong_samples_of_one_problem_only():
    examples = []
    for group, outcome, n in [(0, 1, 3), (0, 0, 4), (0, 0, 2), (1, 0, 5), (1, 1, 2), (2, 1, 3), (-1, -1, 4)]:
        sol = list(range(21, 20 + n))  # n tokens with the one-token prompt: the last is at n - 1
        ex, _ = tv.make_example(PROMPT[:1], sol, float(max(outcome, 0)), max_len=32, level="token")
        examples.append(ex | {"group": group, "outcome": outcome} if group >= 0 else
                        tv.make_lm_example(PROMPT[:1], sol, max_len=32))
    b = tv.collate_fn(0)(examples)
    assert (b["last_idx"] % 5).tolist() == [2, 3, 1, 4, 1, 2, 3] and b["group"].tolist() == [0, 0, 0, 1, 1, 2, -1]
    torch.manual_seed(0)
    z = torch.randn(7, 5, requires_grad=True)
    loss, pairs = tv.rank_loss(z, b)
    last = b["last_idx"] % 5
    zl = [z[i, last[i]].item() for i in range(7)]
    want = [(0, 1), (0, 2), (4, 3)]  # (right, wrong) within problems 0 and 1; problem 2 has no wrong sample
    assert pairs == 3
    assert loss.item() == pytest.approx(np.mean([math.log1p(math.exp(zl[j] - zl[i])) for i, j in want]), rel=1e-6)
    loss.backward()
    nonzero = {(int(i), int(t)) for i, t in z.grad.nonzero().tolist()}
    assert nonzero == {(0, 2), (1, 3), (2, 1), (3, 4), (4, 1)}  # only the paired rows' final values
    none, zero = tv.rank_loss(z[[0, 5, 6]], tv.collate_fn(0)([examples[i] for i in (0, 5, 6)]))
    assert zero == 0 and none.item() == 0.0
    total, stats = tv.verifier_loss(z, None, b, loss="mse", lm_weight=0.0, rank_weight=0.5)
    value_only, _ = tv.verifier_loss(z, None, b, loss="mse", lm_weight=0.0)
    assert total.item() == pytest.approx(value_only.item() + 0.5 * loss.item(), rel=1e-6)
    assert stats["rank_pairs"] == 3


def test_lm_loss_weight_and_zero_weight_gives_no_lm_gradient():
    b = _batch("token")
    torch.manual_seed(0)
    z = torch.randn(2, 7, requires_grad=True)
    logits = torch.randn(len(b["lm_src"]), 30, requires_grad=True)
    targets = torch.tensor([21, 22, 23, 21, 22])
    total, stats = tv.verifier_loss(z, logits, b, loss="mse", lm_weight=0.5)
    ce = torch.nn.functional.cross_entropy(logits, targets)
    value_only, _ = tv.verifier_loss(z, None, b, loss="mse", lm_weight=0.0)
    assert total.item() == pytest.approx(value_only.item() + 0.5 * ce.item(), rel=1e-6)
    assert stats["lm_loss"] == pytest.approx(ce.item(), rel=1e-6)

    off, stats = tv.verifier_loss(z, logits, b, loss="mse", lm_weight=0.0)
    off.backward()
    assert logits.grad is None and "lm_loss" not in stats
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_loss_fn_never_computes_lm_logits_at_zero_weight(tiny_cfg, tiny_llama_dir, monkeypatch):
    ver, tok = build_verifier(tiny_llama_dir)
    b = tv.collate_fn(tok.pad_token_id)([tv.make_example([5, 6, 7], [8, 9], 1.0, max_len=64, level="token")[0]])
    calls = []
    real = ver.lm_logits
    monkeypatch.setattr(ver, "lm_logits", lambda h: calls.append(h.shape) or real(h))
    tiny_cfg.verifier.lm_weight = 0.0
    loss0, _ = tv.make_loss_fn(tiny_cfg.verifier)(ver, b)
    assert calls == []
    tiny_cfg.verifier.lm_weight = 1.0
    loss1, stats = tv.make_loss_fn(tiny_cfg.verifier)(ver, b)
    assert len(calls) == 1 and calls[0][0] == 2  # logits only at the 2 positions before solution tokens
    assert loss1.item() == pytest.approx(loss0.item() + stats["lm_loss"], rel=1e-5)


# ---------------------------------------------------------------- metrics


def test_val_metrics_use_the_shared_estimators():
    # The estimators are gsmv.metrics' (tested in tests/test_metrics.py); here: how validation applies them.
    s = np.array([0.1, 0.4, 0.35, 0.8])
    y = np.array([0, 0, 1, 1], dtype=bool)
    m = tv.val_metrics(["a", "a", "b", "b"], s, y)  # a has no right sample
    assert m["val_coverage"] == 0.5 and m["val_base_accuracy"] == 0.5 and m["val_best_of_n"] == 0.5
    assert m["val_acc"] == 0.75 and m["val_auc"] == pytest.approx(0.75) and m["val_problems"] == 2
    assert m["val_ece"] == pytest.approx(0.25 * (0.1 + 0.65 + 0.4 + 0.2)) and m["val_samples"] == 4
    assert m["val_brier"] == pytest.approx(np.mean((s - y) ** 2))
    # Within-problem AUC: only problems with both labels count, and a problem's scores are compared only
    # with each other (pooled, 0.9 > 0.8 would count; within, c ranks its right sample last).
    m = tv.val_metrics(["c", "c", "d", "d", "e"], np.array([0.9, 0.8, 0.1, 0.2, 0.5]),
                       np.array([0, 1, 0, 1, 1], dtype=bool))
    assert m["val_auc_within"] == pytest.approx(0.5)
    # Best-of-N splits score ties (the first sample does not win them); problems may have different counts.
    m = tv.val_metrics(["a", "a", "a", "b"], np.array([0.9, 0.9, 0.1, 0.2]), np.array([1, 0, 1, 0], dtype=bool))
    assert m["val_best_of_n"] == 0.25 and m["val_problems"] == 2
    assert math.isnan(tv.val_metrics(["a", "a"], s[:2], np.ones(2, dtype=bool))["val_auc"])  # one class only


# ---------------------------------------------------------------- training runs


def _setup_run(cfg, llama_dir, *, n_train: int = 2) -> RunPaths:
    """Generator folder (a random tiny Llama) + train/val samples whose wrong answers open with "Maybe"."""
    paths = RunPaths(cfg.run_dir)
    shutil.copytree(llama_dir, paths.generator_final)
    _, tok = build_verifier(llama_dir)
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    split = lambda i, j: j == i % 2  # noqa: E731 - one right and one wrong sample per problem
    write_shards(paths.samples("train"), labelled_rows(train, tok, n_train, split, hedged_wrong_answer), 64)
    write_shards(paths.samples("val"), labelled_rows(val, tok, 2, split, hedged_wrong_answer), 64)
    return paths


@pytest.mark.parametrize("level", ["token", "solution"])
def test_verifier_learns_a_learnable_labelling(tiny_cfg, tiny_llama_dir, level):
    # A random tiny LM needs a few epochs and a light LM weight to pick up the tell in ~80 steps.
    cfg = tiny_cfg
    cfg.verifier.epochs, cfg.verifier.lr, cfg.verifier.lm_weight, cfg.verifier.level = 3.0, 3e-3, 0.1, level
    paths = _setup_run(cfg, tiny_llama_dir)
    out = tv.main(cfg)
    assert out["val_auc"] > 0.9
    assert out["val_best_of_n"] > 0.9 and out["val_base_accuracy"] == pytest.approx(0.5)
    recs = read_metrics(paths.metrics, "train-verifier")
    data = next(r for r in recs if r.get("event") == "data")
    assert data["init"] == str(paths.generator_final) and data["train_positive_rate"] == pytest.approx(0.5)
    # The paper's equal mix: one reference-solution LM example per value example (lm_ratio 1).
    assert data["lm_data"] == "reference" and data["lm_examples"] == round(cfg.verifier.lm_ratio * data["train_examples"])
    assert any("val_auc" in r for r in recs) and any("train_value_loss" in r for r in recs)
    # The final folder loads in one call and ranks a hedged wrong solution below the right one.
    ver, tok = load_verifier(paths.verifier_final)
    p = load_split(cfg, "val")[0]
    prompt = prompt_ids(tok, p.question)
    sols = [tokens_of(tok, t) + [tok.eos_token_id] for t in (p.solution, hedged_wrong_answer(p.solution))]
    (right, _), (wrong, _) = ver.score_sequences([prompt + s for s in sols], [len(prompt)] * 2, batch_size=2,
                                                 pad_id=tok.pad_token_id)
    assert right > wrong


def test_ranking_loss_alone_learns_to_rank_a_problems_samples(tiny_cfg, tiny_llama_dir):
    # The ranking loss beside the value loss (no LM loss): batches must hold both samples of a problem.
    cfg = tiny_cfg
    cfg.verifier.epochs, cfg.verifier.lr, cfg.verifier.lm_weight, cfg.verifier.level = 3.0, 3e-3, 0.0, "solution"
    cfg.verifier.rank_weight = 1.0
    paths = _setup_run(cfg, tiny_llama_dir)
    out = tv.main(cfg)
    assert out["val_auc_within"] > 0.9 and out["val_best_of_n"] > 0.9
    recs = read_metrics(paths.metrics, "train-verifier")
    pairs = [r["train_rank_pairs"] for r in recs if "train_rank_pairs" in r]
    assert pairs and min(pairs) > 0  # every logged window had pairs: batches hold whole problems


def test_resume_after_a_crash_gives_the_same_verifier(tiny_cfg, tiny_llama_dir, tmp_path):
    tiny_cfg.verifier.save_every = 4
    tiny_cfg.verifier.dropout = 0.0
    _setup_run(tiny_cfg, tiny_llama_dir)

    class Crash(Exception):
        pass

    def crash(step: int) -> None:
        if step == 6:
            raise Crash

    with pytest.raises(Crash):
        tv.main(tiny_cfg, on_step=crash)
    paths = RunPaths(tiny_cfg.run_dir)
    assert (paths.verifier / "step-000004").is_dir() and not paths.verifier_final.exists()
    tv.main(tiny_cfg)
    start = [r for r in read_metrics(paths.metrics, "train-verifier") if r.get("event") == "start"]
    assert start[-1]["resumed_from"].endswith("step-000004")

    # The same run without the crash, in another folder.
    tiny_cfg.out_dir = str(tmp_path / "clean")
    _setup_run(tiny_cfg, tiny_llama_dir)
    tv.main(tiny_cfg)
    a, _ = load_verifier(paths.verifier_final)
    b, _ = load_verifier(RunPaths(tiny_cfg.run_dir).verifier_final)
    torch.testing.assert_close(a.gain, b.gain)
    torch.testing.assert_close(a.bias, b.bias)
    for (name, pa_), (_, pb) in zip(a.lm.named_parameters(), b.lm.named_parameters(), strict=True):
        torch.testing.assert_close(pa_, pb, msg=name)


def test_init_resolution_and_missing_generator(tiny_cfg, tiny_gpt2_dir):
    # The paper starts every verifier from its fine-tuned generator, hub models included.
    assert tiny_cfg.verifier.init == "generator"
    with pytest.raises(GsmvError, match="no fine-tuned generator"):
        tv.build_initial_verifier(tiny_cfg)
    tiny_cfg.model.name = str(tiny_gpt2_dir)
    with pytest.raises(GsmvError, match="no fine-tuned generator"):
        tv.build_initial_verifier(tiny_cfg)
    tiny_cfg.verifier.init = "base"  # the option: the base model
    ver, tok, desc = tv.build_initial_verifier(tiny_cfg)
    assert desc == str(tiny_gpt2_dir) and tok.convert_ids_to_tokens(ver.value_token_id) == "<|value|>"


def test_init_from_a_model_folder_of_another_size(tiny_cfg, tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    # verifier.init = a folder: a verifier of another size than the generator (the paper's size comparison),
    # trained end to end on the generator's samples.
    from transformers import AutoModelForCausalLM

    paths = _setup_run(tiny_cfg, tiny_llama_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    bigger = type(lm)(lm.config.__class__(**{**lm.config.to_dict(), "num_hidden_layers": 3}))
    folder = tmp_path / "bigger"
    bigger.save_pretrained(folder)
    shutil.copy(tiny_llama_dir / "tokenizer.json", folder)
    shutil.copy(tiny_llama_dir / "tokenizer_config.json", folder)
    tiny_cfg.verifier.init = str(folder)
    ver, _, desc = tv.build_initial_verifier(tiny_cfg)
    assert desc == str(folder) and ver.lm.config.num_hidden_layers == 3
    tv.main(tiny_cfg)
    trained, _ = load_verifier(paths.verifier_final)
    assert trained.lm.config.num_hidden_layers == 3
    data = next(r for r in read_metrics(paths.metrics, "train-verifier") if r.get("event") == "data")
    assert data["init"] == str(folder)
    assert trained.reads == "tokens"  # same vocabulary: it reads the sampled ids
    # A folder without a model is no init.
    tiny_cfg.verifier.init = str(tmp_path)
    with pytest.raises(GsmvError, match="not a model folder"):
        tv.build_initial_verifier(tiny_cfg)


def test_no_train_samples_is_an_error(tiny_cfg):
    with pytest.raises(GsmvError, match="no train samples"):
        tv.main(tiny_cfg)


SCRIPT = """
import sys
from gsmv.config import load_config
from gsmv.train import verifier
cfg = load_config(None, sys.argv[1:])
verifier.main(cfg)
"""


def test_two_process_training(tiny_cfg, tiny_llama_dir, tmp_path):
    _setup_run(tiny_cfg, tiny_llama_dir)
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    root = Path(__file__).parents[2]
    overrides = [f"data.dir={tiny_cfg.data.dir}", f"out_dir={tiny_cfg.out_dir}", "name=t", *TINY_OVERRIDES]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(root / "configs/accelerate/cpu_ddp.yaml"), "--main_process_port", "0", str(script), *overrides],
        capture_output=True, text=True, env=env, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = RunPaths(tiny_cfg.run_dir)
    recs = read_metrics(paths.metrics, "train-verifier")
    assert next(r for r in recs if r.get("event") == "start")["processes"] == 2
    end = next(r for r in recs if r.get("event") == "end")
    assert end["val_samples"] == 40 and math.isfinite(end["val_auc"])  # every val sample scored across the ranks
    ver, _ = load_verifier(paths.verifier_final)
    assert ver.head == "token"


def test_fresh_lm_data_trains_the_lm_half_on_new_problems_one_each(smoke_synth_run):
    from gsmv.config import load_config
    from gsmv.data.tasks import fresh_problems
    from gsmv.models.tokenizer import encode_solution

    def data(*overrides):
        cfg = load_config(RunPaths(smoke_synth_run).config, [f"out_dir={smoke_synth_run.parent}", *overrides])
        _, tok, _ = tv.build_initial_verifier(cfg)
        rows, _, refs = tv.read_training_data(cfg, tok)
        return cfg, tok, rows, refs

    cfg, tok, rows, refs = data("verifier.lm_data=fresh", "verifier.lm_ratio=2", "verifier.group_samples=4")
    assert len(refs) == 2 * len(rows)  # one fresh problem per LM example: none repeats
    fresh = fresh_problems(cfg, len(refs))
    assert [r[2] for r in refs] == [encode_solution(tok, p.solution) for p in fresh]
    train_questions = {p.question for s in ("train", "val", "test") for p in load_split(cfg, s)}
    assert not {p.question for p in fresh} & train_questions
    examples, n_value, _, _ = tv.build_examples(rows, refs, cfg.verifier, tok, 512)
    lm = examples[n_value:]
    assert len(lm) == len(refs) and len({tuple(ex["input_ids"]) for ex in lm}) == len(lm)
    assert all(ex["group"] == -1 and not any(ex["value_mask"]) for ex in lm)  # batched apart from samples
    # The paper's default: the train problems' own references, cycled.
    _, _, _, ref = data("verifier.lm_data=reference")
    assert {r[0] for r in ref} == {p.id for p in load_split(cfg, "train")}


def test_a_verifier_of_another_family_reads_the_samples_text(tiny_cfg, tiny_llama_dir, tiny_gpt2_dir):
    # Generator: the tiny Llama and its tokenizer; verifier: a GPT-2 with another vocabulary. It cannot read the
    # sampled ids, so it encodes each sample's text itself, and still learns the labelling's tell.
    from gsmv.models.tokenizer import encode_solution

    cfg = tiny_cfg
    cfg.verifier.epochs, cfg.verifier.lr, cfg.verifier.lm_weight = 3.0, 3e-3, 0.1
    cfg.verifier.init = str(tiny_gpt2_dir)
    paths = _setup_run(cfg, tiny_llama_dir)
    ver, tok, _ = tv.build_initial_verifier(cfg)
    assert ver.reads == "text"
    rows, _, refs = tv.read_training_data(cfg, tok, ver.reads)
    shard = read_shards(paths.samples("train")).table.to_pylist()
    first = shard[0]
    assert rows[0]["tokens"] == encode_solution(tok, first["text"], eos=True)  # its own ids of the text
    assert rows[0]["prompt"] == prompt_ids(tok, load_split(cfg, "train")[0].question)
    out = tv.main(cfg)
    assert out["val_auc"] > 0.9
    trained, vtok = load_verifier(paths.verifier_final)
    assert trained.reads == "text" and len(vtok) != len(AutoTokenizer.from_pretrained(tiny_llama_dir))


def test_train_layers_trains_only_the_top_layers_and_the_head(tiny_cfg, tiny_llama_dir):
    from safetensors.torch import load_file

    cfg = tiny_cfg
    cfg.verifier.train_layers = 1
    paths = _setup_run(cfg, tiny_llama_dir)
    tv.main(cfg)
    before = load_file(str(tiny_llama_dir / "model.safetensors"))
    after = load_file(str(paths.verifier_final / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm.")) for k in changed), sorted(changed)
    assert any(k.startswith("model.layers.1.") for k in changed)
    cfg.verifier.train_layers = 3
    with pytest.raises(GsmvError, match="has 2 layers"):
        tv.main(cfg)


def test_frozen_layers_get_no_residual_dropout(tiny_llama_dir):
    ver, _ = build_verifier(tiny_llama_dir, dropout=0.2)
    layers = [m for m in ver.lm.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]
    assert all(getattr(layer.mlp, "_gsmv_dropout_handle", None) is not None for layer in layers)
    train_top_layers(ver.lm, 1, "verifier.train_layers")
    assert getattr(layers[0].mlp, "_gsmv_dropout_handle", None) is None
    assert getattr(layers[0].self_attn, "_gsmv_dropout_handle", None) is None
    assert getattr(layers[1].mlp, "_gsmv_dropout_handle", None) is not None  # the trained layer keeps it


def test_val_pass_reads_each_question_once_with_the_same_metrics(tiny_llama_dir, monkeypatch):
    # On one process the val pass takes score_sequences' shared-prompt path; its metrics equal the plain path's.
    from accelerate import Accelerator

    ver, tok = build_verifier(tiny_llama_dir, head="token")
    ver.eval()
    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        prompt = [int(t) for t in rng.integers(3, len(tok) - 3, size=6 + p)]
        for k in range(3):
            rows.append({"problem_id": f"p{p}", "prompt": prompt, "label": (p + k) % 2 == 0,
                         "tokens": [int(t) for t in rng.integers(3, len(tok) - 3, size=4 + 3 * k)]})
    calls = []
    real = tv.score_sequences
    monkeypatch.setattr(tv, "score_sequences", lambda *a, **kw: calls.append(kw["share_prompts"]) or real(*a, **kw))
    acc = Accelerator(cpu=True)
    shared = tv.make_eval_fn(acc, rows, batch_size=4, pad_id=tok.pad_token_id, max_len=64)(ver)
    monkeypatch.setattr(tv, "score_sequences", lambda *a, **kw: real(*a, **{**kw, "share_prompts": False}))
    plain = tv.make_eval_fn(acc, rows, batch_size=4, pad_id=tok.pad_token_id, max_len=64)(ver)
    assert calls == [True]
    assert shared.keys() == plain.keys()
    for key in plain:
        assert shared[key] == pytest.approx(plain[key], abs=1e-5), key
