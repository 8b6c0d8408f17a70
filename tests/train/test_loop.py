import math

import pytest
import torch

from gsmv.artifacts import MetricsLog, read_metrics
from gsmv.config import ModelConfig, TrainConfig, load_config
from gsmv.data.gsm8k import load_jsonl
from gsmv.errors import GsmvError
from gsmv.models.loading import apply_residual_dropout, build_from_preset
from gsmv.train.checkpoint import hf_saver, latest_checkpoint, read_state
from gsmv.train.finetune import encode_problems
from gsmv.train.loop import (
    batch_plan,
    build_optimizer,
    causal_lm_loss,
    evaluate_loss,
    fit,
    lm_loss,
    lr_factor,
    make_accelerator,
    pad_collate_fn,
    train_hash,
)


def test_lr_schedules():
    total, warm = 100, 10
    assert lr_factor(0, total, warm, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(9, total, warm, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(10, total, warm, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(55, total, warm, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, total, warm, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, total, warm, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(99, total, 0, "constant", 0.1) == 1.0
    cos = [lr_factor(s, total, warm, "cosine", 0.1) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(cos, cos[1:], strict=False))
    with pytest.raises(GsmvError):
        lr_factor(50, total, warm, "step", 0.1)


def test_optimizer_skips_decay_on_norms_biases_embeddings(tiny_tokenizer):
    model = build_from_preset(ModelConfig(name="tiny"), tiny_tokenizer)
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ([names[id(p)] for p in g["params"]] for g in opt.param_groups)
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert any("embed_tokens" in n for n in no_decay) and any("norm" in n for n in no_decay)
    assert all("norm" not in n and "embed" not in n for n in decay)
    assert any("q_proj" in n for n in decay)
    # Every trainable parameter once (the tied head is the embedding).
    assert len(decay) + len(no_decay) == len({id(p) for p in model.parameters()})


def test_batch_plan_is_a_deterministic_permutation():
    lengths = [(i * 37) % 50 + 1 for i in range(103)]
    a = batch_plan(lengths, 8, seed=3, epoch=0)
    assert a == batch_plan(lengths, 8, seed=3, epoch=0)
    assert a != batch_plan(lengths, 8, seed=3, epoch=1)
    assert a != batch_plan(lengths, 8, seed=4, epoch=0)
    flat = sorted(i for b in a for i in b)
    assert flat == list(range(103))
    # Bucketing: much less padding than random batches.
    def padding(plan):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in plan)
    assert padding(a) < 0.5 * padding(batch_plan(lengths, 8, seed=3, epoch=0, bucket=False))


def test_batch_plan_with_groups_keeps_each_group_together():
    groups = [i // 5 for i in range(50)] + [-1] * 13  # 10 groups of 5, then 13 examples on their own
    lengths = [(i * 37) % 50 + 1 for i in range(63)]
    a = batch_plan(lengths, 10, seed=3, epoch=0, groups=groups)
    assert a == batch_plan(lengths, 10, seed=3, epoch=0, groups=groups)
    assert a != batch_plan(lengths, 10, seed=3, epoch=1, groups=groups)
    assert sorted(i for b in a for i in b) == list(range(63))

    def batches_of_each_group(plan):
        where = {i: n for n, b in enumerate(plan) for i in b}
        return [len({where[i] for i in range(5 * g, 5 * g + 5)}) for g in range(10)]

    # A group's examples are consecutive in the epoch's layout: at most one batch boundary cuts a group, and
    # most groups sit in one batch (without groups, five random rows of 63 almost never share a batch of 10).
    spread = batches_of_each_group(a)
    assert max(spread) <= 2 and spread.count(1) >= 5
    assert batches_of_each_group(batch_plan(lengths, 10, seed=3, epoch=0)).count(1) <= 1


def test_pad_collate_and_lm_loss():
    collate = pad_collate_fn(pad_id=7)
    batch = collate([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 10)
    loss, n = lm_loss(logits, batch["labels"])
    assert n == 2  # targets 2 and 3 of row 0 (position 0 is never a target)
    expect = (torch.nn.functional.cross_entropy(logits[0, 0:1], torch.tensor([2]))
              + torch.nn.functional.cross_entropy(logits[0, 1:2], torch.tensor([3]))) / 2
    assert float(loss) == pytest.approx(float(expect), rel=1e-6)


def _setup(tiny_tokenizer, tiny_data_dir, seed=0):
    torch.manual_seed(seed)
    model = build_from_preset(ModelConfig(name="tiny"), tiny_tokenizer)
    problems = load_jsonl(tiny_data_dir / "train.jsonl", "train")
    examples, _ = encode_problems(tiny_tokenizer, problems[:96], 128, False)
    return model, examples


def _run(tmp, tiny_tokenizer, tiny_data_dir, tcfg, on_step=None, val=True):
    cfg = load_config(None, ["device=cpu"])
    model, examples = _setup(tiny_tokenizer, tiny_data_dir)
    apply_residual_dropout(model, tcfg.dropout)
    acc = make_accelerator(cfg, tcfg)
    res = fit(accelerator=acc, model=model, tcfg=tcfg, train_examples=examples[:80],
              collate=pad_collate_fn(tiny_tokenizer.pad_token_id), loss_fn=causal_lm_loss, ckpt_dir=tmp / "gen",
              config_hash=train_hash(cfg, tcfg), save_model=hf_saver(tiny_tokenizer),
              metrics=MetricsLog(tmp / "metrics.jsonl", "test"), val_examples=examples[80:] if val else None,
              on_step=on_step)
    return res, model


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tcfg(**kw):
    base = dict(epochs=2.0, lr=3e-3, batch_size=8, grad_accum=2, dropout=0.1, save_every=3, keep_checkpoints=2,
                log_every=2, warmup_ratio=0.1)
    base.update(kw)
    return TrainConfig(**base)


class Crash(Exception):
    pass


def test_resume_after_crash_matches_uninterrupted_run(tmp_path, tiny_tokenizer, tiny_data_dir):
    tcfg = _tcfg()
    full, model_a = _run(tmp_path / "a", tiny_tokenizer, tiny_data_dir, tcfg)
    assert full.total_steps == 10  # 80 examples / (8 × 2 accum) = 5 steps per epoch × 2 epochs

    def crash(step):
        if step == 7:
            raise Crash

    with pytest.raises(Crash):
        _run(tmp_path / "b", tiny_tokenizer, tiny_data_dir, tcfg, on_step=crash)
    ck = latest_checkpoint(tmp_path / "b" / "gen")
    assert ck is not None and ck.name == "step-000006"
    assert read_state(ck)["step"] == 6
    assert not (tmp_path / "b" / "gen" / "final").exists()

    resumed, model_b = _run(tmp_path / "b", tiny_tokenizer, tiny_data_dir, tcfg)
    assert resumed.resumed_from == ck and resumed.step == 10
    wa, wb = _weights(model_a), _weights(model_b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.val["val_loss"] == pytest.approx(full.val["val_loss"], abs=1e-9)
    # Only the last keep_checkpoints step folders survive; no temporary folders are left.
    names = sorted(p.name for p in (tmp_path / "b" / "gen").iterdir())
    assert names == ["final", "step-000006", "step-000009"]
    # The final folder loads as a plain HF model with its tokenizer.
    from gsmv.models.loading import load_model_and_tokenizer

    m, tok = load_model_and_tokenizer(tmp_path / "b" / "gen" / "final", dtype=torch.float32, device="cpu")
    assert all(torch.equal(v, wa[k]) for k, v in m.state_dict().items())
    assert len(tok) == len(tiny_tokenizer)


def test_resume_refuses_other_config_and_done_run_is_skipped(tmp_path, tiny_tokenizer, tiny_data_dir):
    def crash(step):
        if step == 4:
            raise Crash

    with pytest.raises(Crash):
        _run(tmp_path, tiny_tokenizer, tiny_data_dir, _tcfg(), on_step=crash)
    with pytest.raises(GsmvError, match="step-000003.*another config"):
        _run(tmp_path, tiny_tokenizer, tiny_data_dir, _tcfg(lr=1e-3))
    # Logging/saving cadence is not part of the hash.
    cfg = load_config("smoke")
    assert train_hash(cfg, _tcfg(log_every=99, save_every=0)) == train_hash(cfg, _tcfg())
    assert train_hash(cfg, _tcfg(lr=0.5)) != train_hash(cfg, _tcfg())
    res, _ = _run(tmp_path, tiny_tokenizer, tiny_data_dir, _tcfg(log_every=5))
    assert not res.skipped
    again, _ = _run(tmp_path, tiny_tokenizer, tiny_data_dir, _tcfg())
    assert again.skipped and again.step == res.step


def test_training_lowers_loss_and_logs(tmp_path, tiny_tokenizer, tiny_data_dir):
    res, _ = _run(tmp_path, tiny_tokenizer, tiny_data_dir, _tcfg(epochs=3.0, dropout=0.0, save_every=0))
    recs = read_metrics(tmp_path / "metrics.jsonl", "test")
    train = [r for r in recs if "loss" in r]
    vals = [r["val_loss"] for r in recs if "val_loss" in r and "event" not in r]
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    assert len(vals) >= 3 and vals[-1] < vals[0]
    assert all(r["tokens_per_s"] > 0 and math.isfinite(r["lr"]) for r in train)
    assert res.val["val_loss"] == pytest.approx(vals[-1])


def test_evaluate_loss_weights_by_tokens(tiny_tokenizer, tiny_data_dir):
    model, examples = _setup(tiny_tokenizer, tiny_data_dir)
    acc = make_accelerator(load_config(None, ["device=cpu"]), TrainConfig())
    collate = pad_collate_fn(tiny_tokenizer.pad_token_id)
    ex = examples[:10]
    got = evaluate_loss(acc, model, ex, collate, causal_lm_loss, batch_size=3)["loss"]
    with torch.no_grad():
        per = [causal_lm_loss(model, collate([e])) for e in ex]
    expect = sum(float(loss) * s["tokens"] for loss, s in per) / sum(s["tokens"] for _, s in per)
    assert got == pytest.approx(expect, rel=1e-5)
    assert model.training  # restored


def test_too_few_examples_is_a_clear_error(tmp_path, tiny_tokenizer, tiny_data_dir):
    model, examples = _setup(tiny_tokenizer, tiny_data_dir)
    tcfg = _tcfg(batch_size=64, grad_accum=4)
    acc = make_accelerator(load_config(None, ["device=cpu"]), tcfg)
    with pytest.raises(GsmvError, match="no full optimizer step"):
        fit(accelerator=acc, model=model, tcfg=tcfg, train_examples=examples[:20],
            collate=pad_collate_fn(0), loss_fn=causal_lm_loss, ckpt_dir=tmp_path, config_hash="x",
            save_model=hf_saver(tiny_tokenizer))
