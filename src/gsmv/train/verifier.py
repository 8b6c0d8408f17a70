"""Stage `train-verifier`: train the verifier on labelled generator samples.

Data: one value example per train sample, format_prompt(question) followed by the sample's own
token ids (samples/train shards) and EOS when the sample finished (solution_ids), with its
0/1 label (is_correct; unlabelled rows are skipped). cfg.verifier.labels=process replaces the
outcome label by step-level truth where the task has it: 1 up to the first wrong step, 0 from there.
With cfg.verifier.lm_data=reference (the paper) LM examples are added: the original training
solutions (question + reference solution + EOS), cycled to lm_ratio per value example; they carry
only the LM loss and the value examples only the value loss. lm_data=samples puts the LM loss on
the samples themselves; lm_data=fresh (synth) trains it on the reference solutions of newly drawn
problems, one per LM example, so the LM half sees new problems instead of the train ones ~100 times.
Sequences longer than cfg.verifier.max_len lose tokens from the left: the end of the
solution, where the value matters most, is always kept.

Loss (per micro-batch, a mean over the positions that carry it):
- value: MSE between the value (a probability) and the label (the paper), or BCE on the
  value's logit (cfg.verifier.loss=bce). cfg.verifier.level=token puts it at every solution
  token (a value function over prefixes); level=solution at the final token only. Question
  and padding positions never carry it.
- LM: next-token cross entropy on the solution tokens of the examples that carry it, weighted by
  cfg.verifier.lm_weight; at 0 the LM logits are not even computed.

Init (cfg.verifier.init): "generator" = run_dir/generator/final (the paper, for every model),
"base" = cfg.model.name (a hub model / folder, or for presets a fresh random model), or a model
folder, such as another run's generator/final (a larger or smaller verifier than the generator),
whose vocabulary must be the generator's.
The head first starts from the data: the token head's gain and bias (Verifier.calibrate_head), the linear head
as a logistic probe of the hidden states (Verifier.fit_linear_head).

Validation on samples of the val problems (samples/val): AUC, accuracy at 0.5, ECE, Brier
score, best-of-N accuracy (the highest-value sample of each problem), next to the samples'
own accuracy and coverage; logged to metrics.jsonl (stage "train-verifier").
Checkpoints and resume come from gsmv.train.loop (run_dir/verifier/step-NNNNNN); the final
model is run_dir/verifier/final, loadable with gsmv.models.verifier.load_verifier.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn
from torch.nn import functional as F

from gsmv.artifacts import MetricsLog, RunPaths, list_shards, read_shard
from gsmv.config import RunConfig, VerifierConfig
from gsmv.errors import GsmvError
from gsmv.models.verifier import (
    Verifier,
    build_verifier,
    ensure_value_token,
    input_limit,
    pad_id_of,
    prompt_ids,
    sample_solution_ids,
    score_sequences,
    shares_vocabulary,
)
from gsmv.runtime import seed_everything, setup_threads
from gsmv.train.loop import Batch, fit, make_accelerator, train_hash
from gsmv.train.packing import packed_collate, plain_collate

STAGE = "train-verifier"
CALIBRATION_EXAMPLES = 128  # enough for a mean and a spread; cheap on a big model
LINEAR_PROBE_EXAMPLES = 512  # a probe's direction needs more samples than the token head's two numbers


# ---------------------------------------------------------------- data


def make_example(prompt: Sequence[int], solution: Sequence[int], label: float, *, max_len: int,
                 level: str, lm: bool = True, wrong_from: int | None = None) -> tuple[dict, bool]:
    """One value example and whether it was truncated.

    input_ids = prompt + solution, cut from the left to max_len; labels = solution ids (LM targets) when
    `lm`, else -100 everywhere; value_mask = 1 where the value loss applies (every solution token, or the
    last token for level=solution; the last token also when the solution is empty); target = the value's
    target at every position: `label`, or for process labels (wrong_from = the solution token index where
    the first wrong step ends) 1 before that token and 0 from it on."""
    ids = list(prompt) + list(solution)
    start = len(prompt)
    target = [float(label)] * len(ids)
    if wrong_from is not None:
        target = [1.0] * (start + wrong_from) + [0.0] * (len(ids) - start - wrong_from)
    cut = max(0, len(ids) - max_len)
    ids, target, start = ids[cut:], target[cut:], max(0, start - cut)
    labels = [-100] * start + ids[start:] if lm else [-100] * len(ids)
    value_mask = [0] * len(ids)
    if level == "token" and start < len(ids):
        value_mask[start:] = [1] * (len(ids) - start)
    else:
        value_mask[-1] = 1
    return {"input_ids": ids, "labels": labels, "value_mask": value_mask, "target": target,
            "prompt_len": start}, cut > 0


def make_lm_example(prompt: Sequence[int], solution: Sequence[int], *, max_len: int) -> dict:
    """An LM-only example (a reference solution): LM targets on the solution, no value position."""
    ids = (list(prompt) + list(solution))[:max_len]
    labels = ([-100] * len(prompt) + list(solution))[:max_len]
    return {"input_ids": ids, "labels": labels, "value_mask": [0] * len(ids), "target": [0.0] * len(ids),
            "prompt_len": min(len(prompt), max_len)}


def wrong_step_token(tokenizer: Any, tokens: Sequence[int], char_end: int) -> int:
    """The index of the first token whose decoded prefix reaches char offset `char_end` (binary search)."""
    from gsmv.sampling.base import decode

    lo, hi = 1, len(tokens)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(tokenizer, tokens[:mid])) >= char_end:
            hi = mid
        else:
            lo = mid + 1
    return max(0, lo - 1)


def read_samples(folder: Path, prompts: dict[str, list[int]], split: str, tokenizer: Any,
                 steps: Callable[[str, str], int | None] | None = None, reads: str = "tokens") -> list[dict]:
    """Labelled rows {problem_id, prompt, tokens, label, wrong_char} of a sample folder (unlabelled rows
    skipped); tokens are what the verifier reads after the prompt (gsmv.models.verifier.sample_solution_ids:
    the sampled ids, or with reads="text" the text in `tokenizer`'s ids); wrong_char = steps(problem_id, text):
    where the first wrong step ends (None: none, or not checked)."""
    rows = []
    names = ("problem_id", "tokens", "is_correct", "finished", "text")
    for path in list_shards(folder):
        t = read_shard(path, names)
        cols = (t.column(c).to_pylist() for c in names)
        for i, (pid, toks, ok, finished, text) in enumerate(zip(*cols, strict=True)):
            if ok is None:
                continue
            if pid not in prompts:
                raise GsmvError(f"{path}: row {i}: problem_id {pid!r} is not in the '{split}' split")
            rows.append({"problem_id": pid, "prompt": prompts[pid],
                         "tokens": sample_solution_ids(reads, tokenizer, toks, finished, text),
                         "label": bool(ok), "wrong_char": steps(pid, text or "") if steps else None})
    return rows


def collate_fn(pad_id: int, pack_tokens: int = 0):
    """The batch layout (gsmv.train.packing): one example a row, or with pack_tokens > 0 shared-prompt rows of
    at most that many tokens. The two give equal losses and gradients."""
    return packed_collate(pad_id, pack_tokens) if pack_tokens > 0 else plain_collate(pad_id)


# ---------------------------------------------------------------- loss


def rank_loss(value_logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
    """(mean of softplus(z_wrong - z_right) over the batch's (right, wrong) pairs of one problem, pair count);
    z = the logit of an example's final value. 0 (with a graph) when the batch has no such pair."""
    z = value_logits.reshape(-1)[batch["last_idx"]]
    group, outcome = batch["group"], batch["outcome"]
    pair = (group[:, None] == group[None, :]) & (group[:, None] >= 0) & (outcome[:, None] == 1) & \
        (outcome[None, :] == 0)  # [i, j]: i right, j wrong, same problem
    n = int(pair.sum())
    if n == 0:
        return value_logits.sum() * 0.0, 0
    return F.softplus(z[None, :] - z[:, None])[pair].mean(), n


def verifier_loss(value_logits: torch.Tensor, lm_logits: torch.Tensor | None, batch: Batch, *,
                  loss: str = "mse", lm_weight: float = 1.0, rank_weight: float = 0.0,
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """(value loss + lm_weight · LM loss + rank_weight · rank_loss, stats) of a batch of gsmv.train.packing's
    layout. value_logits: (rows, width); lm_logits: the (N, V) logits at batch["lm_src"], or None when lm_weight
    is 0 (then the LM objective contributes nothing). Each loss is a mean over the positions (or pairs) that
    carry it, so it does not depend on the layout."""
    target = batch["value_target"].to(value_logits.dtype)
    z = value_logits.reshape(-1)[batch["value_idx"]]
    if not target.numel():  # a batch of LM-only examples: no value loss (and no NaN from an empty mean)
        value_loss = value_logits.sum() * 0.0
    elif loss == "mse":
        value_loss = (torch.sigmoid(z) - target).pow(2).mean()
    elif loss == "bce":
        value_loss = F.binary_cross_entropy_with_logits(z, target)
    else:
        raise GsmvError(f"verifier loss '{loss}': valid losses are mse, bce")
    stats = {"value_loss": float(value_loss.detach()), "tokens": float(target.numel())}
    total = value_loss
    if lm_weight > 0:
        if lm_logits is None:
            raise GsmvError("verifier_loss: lm_weight > 0 needs the LM logits")
        targets = batch["lm_tgt"]
        lm = F.cross_entropy(lm_logits.float(), targets) if targets.numel() else lm_logits.sum() * 0.0
        stats["lm_loss"] = float(lm.detach())
        total = total + lm_weight * lm
    if rank_weight > 0:
        rank, pairs = rank_loss(value_logits, batch)
        stats["rank_loss"], stats["rank_pairs"] = float(rank.detach()), float(pairs)
        total = total + rank_weight * rank
    return total, stats


def build_examples(rows: Sequence[dict], refs: Sequence[tuple[str, list[int], list[int]]] | None,
                   vcfg: VerifierConfig, tokenizer: Any, max_len: int) -> tuple[list[dict], int, int, int]:
    """(examples, value examples, truncated, with a wrong step) from read_samples rows, in row order: one value
    example per row (its problem as "group", its label as "outcome"), then, when `refs` (problem id, prompt,
    reference solution ids) are given, the paper's equal mix of LM examples: the references cycled (upsampled)
    to vcfg.lm_ratio per value example. With group_samples an LM example joins its problem's group, so it is
    batched (and packed) with that problem's samples."""
    lm_on_samples = vcfg.lm_weight > 0 and vcfg.lm_data == "samples"
    examples, n_cut, n_wrong = [], 0, 0
    problem_index: dict[str, int] = {}
    for r in rows:
        wrong_from = None
        if r["wrong_char"] is not None:
            wrong_from = wrong_step_token(tokenizer, r["tokens"], r["wrong_char"])
            n_wrong += 1
        ex, cut = make_example(r["prompt"], r["tokens"], r["label"], max_len=max_len, level=vcfg.level,
                               lm=lm_on_samples, wrong_from=wrong_from)
        ex |= {"group": problem_index.setdefault(r["problem_id"], len(problem_index)), "outcome": int(r["label"])}
        examples.append(ex)
        n_cut += cut
    n_value = len(examples)
    for i in range(round(vcfg.lm_ratio * n_value) if refs else 0):
        pid, prompt, solution = refs[i % len(refs)]
        ex = make_lm_example(prompt, solution, max_len=max_len)
        if vcfg.group_samples > 0:
            ex["group"] = problem_index.get(pid, -1)
        examples.append(ex)
    return examples, n_value, n_cut, n_wrong


def batch_groups(problems: Sequence[int], vcfg: VerifierConfig) -> list[int] | None:
    """The batch plan's groups (gsmv.train.loop.batch_plan: a group's examples share a batch) for examples of
    these problems (-1: none, e.g. an LM example). group_samples = G > 0: each problem's examples in chunks of
    G, so a batch holds up to G samples of each problem it draws (packing reads their question once); else,
    with the ranking loss, whole problems (it compares one problem's samples); else None (examples shuffled
    one by one)."""
    if vcfg.group_samples > 0:
        seen: dict[int, int] = {}
        out = []
        for g in problems:
            if g < 0:
                out.append(-1)
                continue
            k = seen.get(g, 0)
            seen[g] = k + 1
            out.append(g * (1 << 20) + k // vcfg.group_samples)
        return out
    return list(problems) if vcfg.rank_weight > 0 else None


def make_loss_fn(vcfg: VerifierConfig):
    def loss_fn(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        use_lm = vcfg.lm_weight > 0
        out = model(batch["input_ids"], batch["attention_mask"], position_ids=batch.get("position_ids"),
                    return_logits=False, logits_index=batch["lm_src"] if use_lm else None)
        return verifier_loss(out.value_logits, out.logits, batch, loss=vcfg.loss, lm_weight=vcfg.lm_weight,
                             rank_weight=vcfg.rank_weight)

    return loss_fn


# ---------------------------------------------------------------- metrics


def val_metrics(problem_ids: Sequence[str], scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Validation metrics of the val samples' scores (the estimators of gsmv.metrics, as the evaluation uses;
    NaN where undefined). val_auc_within is the mean AUC within problems that have both labels. val_best_of_n is best-of-N at N = each problem's own sample count, score ties split."""
    from gsmv import metrics

    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    pids = np.asarray(problem_ids)
    solved = {pid for pid, ok in zip(problem_ids, labels, strict=True) if ok}
    n_problems = len(set(problem_ids))
    pooled = metrics.auc(scores, labels)
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(problem_ids):
        groups.setdefault(pid, []).append(i)
    within = metrics.auc_within([scores[ix] for ix in groups.values()], [labels[ix] for ix in groups.values()])
    return {
        "val_auc": float("nan") if pooled is None else pooled,
        # Ranking samples of one problem is the verifier's job; pooled AUC also rewards knowing which
        # problems are hard, which best-of-N cannot use.
        "val_auc_within": float("nan") if within is None else within,
        "val_acc": float(((scores >= 0.5) == labels).mean()) if labels.size else float("nan"),
        "val_ece": metrics.expected_calibration_error(scores, labels),
        "val_brier": metrics.brier(scores, labels),
        "val_best_of_n": metrics.best_of_all(pids, scores, labels),
        "val_base_accuracy": float(labels.mean()) if labels.size else float("nan"),
        "val_coverage": len(solved) / n_problems if n_problems else float("nan"),
        "val_samples": float(len(labels)),
        "val_problems": float(n_problems),
    }


def make_eval_fn(accelerator: Accelerator, rows: list[dict], *, batch_size: int, pad_id: int, max_len: int):
    """Score every val sample (rows split across processes), gather, compute val_metrics."""
    seqs = [r["prompt"] + r["tokens"] for r in rows]
    starts = [len(r["prompt"]) for r in rows]
    pids = [r["problem_id"] for r in rows]
    labels = np.array([r["label"] for r in rows], dtype=bool)

    def eval_fn(model: nn.Module) -> dict[str, float]:
        world, rank = accelerator.num_processes, accelerator.process_index
        mine = list(range(rank, len(rows), world))
        per_rank = math.ceil(len(rows) / world)
        was_training = model.training
        model.eval()
        # One process holds the plain Verifier: each problem's prompt is read once for its samples (on SmolLM2's
        # val samples the prompt is about half of every sequence). Wrapped models take the plain path, whose
        # forward count min_batches keeps equal on every rank.
        share = world == 1 and isinstance(model, Verifier)
        res = score_sequences(model, [seqs[i] for i in mine], [starts[i] for i in mine], batch_size=batch_size,
                              pad_id=pad_id, max_len=max_len, min_batches=math.ceil(per_rank / batch_size),
                              share_prompts=share)
        if was_training:
            model.train()
        got = gather_object([(i, final) for i, (final, _) in zip(mine, res, strict=True)])
        scores = np.full(len(rows), np.nan)
        for i, s in got:
            scores[i] = s
        return val_metrics(pids, scores, labels)

    return eval_fn


# ---------------------------------------------------------------- init


def build_initial_verifier(cfg: RunConfig) -> tuple[Verifier, Any, str]:
    """(verifier in fp32 on CPU, tokenizer, a description of the init) per cfg.verifier.init."""
    from gsmv.models.loading import apply_residual_dropout, build_from_preset, is_preset

    vcfg = cfg.verifier
    paths = RunPaths(cfg.run_dir)
    if vcfg.init == "generator":
        if not (paths.generator_final / "config.json").is_file():
            raise GsmvError(f"{paths.generator_final}: no fine-tuned generator to start the verifier from "
                            "(run finetune first, or set verifier.init=base)")
        ver, tok = build_verifier(paths.generator_final, head=vcfg.head, value_token=vcfg.value_token,
                                  dtype=torch.float32, device="cpu", dropout=vcfg.dropout)
        return ver, tok, str(paths.generator_final)
    if vcfg.init != "base":
        return _verifier_from_folder(str(vcfg.init), cfg)
    if is_preset(cfg.model.name):
        from transformers import AutoTokenizer

        from gsmv.models.tokenizer import check_tokenizer

        if not paths.tokenizer.is_dir():
            raise GsmvError(f"{paths.tokenizer}: no tokenizer for the '{cfg.model.name}' preset (run finetune first)")
        tok = check_tokenizer(AutoTokenizer.from_pretrained(paths.tokenizer), where=str(paths.tokenizer))
        lm = build_from_preset(cfg.model, tok, seed=vcfg.seed)
        apply_residual_dropout(lm, vcfg.dropout)
        tid = ensure_value_token(lm, tok, vcfg.value_token) if vcfg.head == "token" else None
        return Verifier(lm, head=vcfg.head, value_token_id=tid, tokenizer=tok), tok, f"random {cfg.model.name}"
    ver, tok = build_verifier(cfg.model.name, head=vcfg.head, value_token=vcfg.value_token, dtype=torch.float32,
                              device="cpu", dropout=vcfg.dropout)
    return ver, tok, cfg.model.name


def _verifier_from_folder(name: str, cfg: RunConfig) -> tuple[Verifier, Any, str]:
    """verifier.init = a model folder, hub id or packaged model (gsmv.models.sources). One that shares the
    generator's vocabulary reads the samples' token ids; any other reads their text with its own tokenizer."""
    from transformers import AutoTokenizer

    from gsmv.models.sources import looks_local

    vcfg = cfg.verifier
    if looks_local(name) and not (Path(name).expanduser() / "config.json").is_file():
        raise GsmvError(f"verifier.init={name}: not a model folder (no config.json)")
    paths = RunPaths(cfg.run_dir)
    ours = paths.generator_final if (paths.generator_final / "config.json").is_file() else paths.tokenizer
    if not ours.is_dir():
        raise GsmvError(f"{paths.generator_final}: no generator whose samples the verifier reads "
                        "(run finetune first)")
    ver, tok = build_verifier(name, head=vcfg.head, value_token=vcfg.value_token, dtype=torch.float32,
                              device="cpu", dropout=vcfg.dropout)
    if not shares_vocabulary(AutoTokenizer.from_pretrained(ours), tok):
        ver.reads = "text"
    return ver, tok, name


def _freeze_unused_lm_head(ver: Verifier, vcfg: VerifierConfig) -> None:
    """An untied output layer that neither the LM loss nor the head reads gets no gradient, which DDP
    rejects; freeze it instead."""
    out, inp = ver.lm.get_output_embeddings(), ver.lm.get_input_embeddings()
    tied = out.weight is inp.weight
    if vcfg.lm_weight == 0 and vcfg.head == "linear" and not tied:
        out.requires_grad_(False)


@torch.no_grad()
def calibrate(ver: Verifier, examples: list[dict], collate, batch_size: int) -> float | None:
    """Start the head from the training data: the token head's gain and bias fitted to the reserved logits on
    CALIBRATION_EXAMPLES examples spread over the problems; the linear head as a logistic probe of the final
    hidden states on LINEAR_PROBE_EXAMPLES (returns the probe's L2 strength)."""
    if not examples:
        return None
    was = ver.training
    ver.eval()
    k = CALIBRATION_EXAMPLES if ver.head == "token" else LINEAR_PROBE_EXAMPLES
    sample = examples[::max(1, len(examples) // k)][:k]  # spread over problems
    device = next(ver.parameters()).device
    feats, targets, ids = [], [], []
    for i in range(0, len(sample), batch_size):
        chunk = sample[i:i + batch_size]
        b = {k: v.to(device) for k, v in collate(chunk).items()}
        h = ver.hidden_states(b["input_ids"], b["attention_mask"], position_ids=b.get("position_ids"))
        if ver.head == "token":
            feats.append(ver.reserved_logits(h).reshape(-1)[b["value_idx"]])
            continue
        feats.append(h.reshape(-1, h.shape[-1])[b["value_idx"]].float().cpu())
        targets.append(b["value_target"].float().cpu())
        # value_idx lists each example's positions in turn, so its sample id repeats once per position
        ids.append(torch.repeat_interleave(torch.arange(i, i + len(chunk)),
                                           torch.tensor([sum(ex["value_mask"]) for ex in chunk])))
    ver.train(was)
    if ver.head == "linear":
        return ver.fit_linear_head(torch.cat(feats), torch.cat(targets), torch.cat(ids))
    rate = float(np.mean([t for ex in examples for t, m in zip(ex["target"], ex["value_mask"], strict=True) if m]))
    ver.calibrate_head(torch.cat(feats), rate)
    return None


def verifier_saver(tokenizer: Any, card: dict | None = None):
    def save(model: nn.Module, folder: Path, state_dict: dict[str, torch.Tensor]) -> None:
        model.save_pretrained(folder, tokenizer=tokenizer, state_dict=state_dict)
        if card is not None:
            from gsmv.model_card import write_card

            write_card(folder, **card)

    return save


# ---------------------------------------------------------------- stage


def read_training_data(cfg: RunConfig, tokenizer: Any, reads: str = "tokens") -> tuple[list[dict], list[dict],
                                                                                        list | None]:
    """(train rows, val rows, reference LM data) of a run folder, as the stage reads them: read_samples rows of
    samples/train (process labels' first wrong step when cfg.verifier.labels=process) and samples/val (none when
    it has no shards), and build_examples' `refs` (problem id, prompt, reference solution ids of every train
    problem; with lm_data=fresh, of as many newly drawn problems as there are LM examples) when the joint LM loss
    trains on references, else None."""
    from gsmv.data.tasks import load_split

    vcfg = cfg.verifier
    paths = RunPaths(cfg.run_dir)
    problems = {split: load_split(cfg, split) for split in ("train", "val")}

    @functools.cache
    def prompts_of(split: str) -> dict[str, list[int]]:
        return {p.id: prompt_ids(tokenizer, p.question) for p in problems[split]}

    steps = None
    if vcfg.labels == "process":
        from gsmv.data.tasks import first_wrong_step, reference_values

        values = {p.id: reference_values(p) for p in problems["train"]}
        steps = lambda pid, text: first_wrong_step(text, values[pid])  # noqa: E731
    train_rows = read_samples(paths.samples("train"), prompts_of("train"), "train", tokenizer, steps, reads)
    if not train_rows:
        raise GsmvError(f"{paths.samples('train')}: no labelled samples (run label first)")
    val_rows = (read_samples(paths.samples("val"), prompts_of("val"), "val", tokenizer, reads=reads)
                if list_shards(paths.samples("val")) else [])
    refs = None
    if vcfg.lm_weight > 0 and vcfg.lm_data in ("reference", "fresh"):
        from gsmv.models.tokenizer import encode_solution

        if vcfg.lm_data == "reference":
            prompts = prompts_of("train")
            refs = [(p.id, prompts[p.id], encode_solution(tokenizer, p.solution)) for p in problems["train"]]
        else:  # one fresh problem per LM example: none repeats
            from gsmv.data.tasks import fresh_problems

            fresh = fresh_problems(cfg, max(1, round(vcfg.lm_ratio * len(train_rows))))
            refs = [(p.id, prompt_ids(tokenizer, p.question), encode_solution(tokenizer, p.solution)) for p in fresh]
    return train_rows, val_rows, refs


def main(cfg: RunConfig, *, on_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """Train the verifier → run_dir/verifier/final; returns the final validation metrics.
    on_step(step) runs after every optimizer step (tests use it to simulate a crash)."""
    vcfg = cfg.verifier
    setup_threads(cfg)
    accelerator = make_accelerator(cfg, vcfg)
    paths = RunPaths(cfg.run_dir)
    if not list_shards(paths.samples("train")):
        raise GsmvError(f"{paths.samples('train')}: no train samples (run sample --split train, then label)")
    seed_everything(vcfg.seed)
    ver, tok, init_desc = build_initial_verifier(cfg)
    _freeze_unused_lm_head(ver, vcfg)
    from gsmv.models.loading import train_top_layers

    train_top_layers(ver.lm, vcfg.train_layers, "verifier.train_layers")
    pad_id = pad_id_of(tok)
    max_len = input_limit(ver.lm, vcfg.max_len)

    train_rows, val_rows, refs = read_training_data(cfg, tok, ver.reads)
    train_ex, n_value, n_cut, n_wrong_steps = build_examples(train_rows, refs, vcfg, tok, max_len)
    lm_on_samples = vcfg.lm_weight > 0 and vcfg.lm_data == "samples"
    val_ex = [make_example(r["prompt"], r["tokens"], r["label"], max_len=max_len, level=vcfg.level,
                           lm=lm_on_samples)[0] for r in val_rows]
    collate = collate_fn(pad_id, vcfg.pack_tokens)
    ver.to(accelerator.device)  # where prepare() would put it anyway; calibration runs there
    probe_l2 = calibrate(ver, train_ex[:n_value], collate, vcfg.batch_size)

    metrics = MetricsLog(paths.metrics, STAGE, enabled=accelerator.is_main_process)
    positives = sum(r["label"] for r in train_rows)
    metrics.log(event="data", init=init_desc, train_examples=n_value, lm_examples=len(train_ex) - n_value,
                train_positive_rate=positives / n_value, truncated=n_cut, val_examples=len(val_ex), head=vcfg.head,
                level=vcfg.level, loss=vcfg.loss, lm_weight=vcfg.lm_weight, lm_data=vcfg.lm_data,
                labels=vcfg.labels, samples_with_wrong_steps=n_wrong_steps,
                **({"probe_l2": probe_l2} if probe_l2 is not None else {}))
    eval_fn = make_eval_fn(accelerator, val_rows, batch_size=vcfg.batch_size, pad_id=pad_id,
                           max_len=max_len) if val_rows else None
    result = fit(
        accelerator=accelerator,
        model=ver,
        tcfg=vcfg,
        train_examples=train_ex,
        collate=collate,
        loss_fn=make_loss_fn(vcfg),
        ckpt_dir=paths.verifier,
        config_hash=train_hash(cfg, vcfg, init=init_desc, examples=len(train_ex), positives=positives),
        save_model=verifier_saver(tok, card={"kind": "verifier", "base": init_desc, "extra": {
            "labels": vcfg.labels, "head": vcfg.head, "level": vcfg.level, "loss": vcfg.loss, "data": cfg.data.source,
            "dataset": "openai/gsm8k" if cfg.data.source == "gsm8k" else None}}),
        metrics=metrics,
        val_examples=val_ex or None,
        eval_fn=eval_fn,
        on_step=on_step,
        desc=STAGE,
        groups=batch_groups([ex.get("group", -1) for ex in train_ex], vcfg),
    )
    accelerator.wait_for_everyone()
    return dict(result.val)
