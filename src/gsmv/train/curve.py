"""A verifier's learning curve: within-problem ranking against value examples seen, on its own training data
and on held-out problems.

The stage (gsmv.train.verifier) trains on a schedule and reports once at the end; a curve needs the same
model, examples, batch layout and loss, evaluated every `eval_every` steps with a constant learning rate (so
an earlier point is a model one could have stopped at). `train_curve` is that loop; docs/research/scripts/verifier_curve.py
runs it on a run folder's samples (and, with few problems and many steps, is the memorisation test: a
verifier must be able to order the samples it trained on).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from gsmv.config import VerifierConfig
from gsmv.models.likelihood import sequence_loglik
from gsmv.models.verifier import Verifier, pad_id_of, score_sequences
from gsmv.train.loop import batch_plan, build_optimizer, build_scheduler


@dataclass
class ProbeSet:
    """Samples to rank at every evaluation: their sequences (prompt + tokens), prompt lengths, problems, labels."""

    name: str
    sequences: list[list[int]]
    starts: list[int]
    problem_ids: list[str]
    labels: np.ndarray
    # The start model's summed log-likelihood of each sequence, kept at the first LM probe: the log-likelihood
    # ratio against it says where training moved the LM's beliefs about these samples.
    start_loglik: np.ndarray | None = field(default=None, repr=False)
    # The latest probe's scores (final values; with the LM probe, (sum, mean) log-likelihoods): after training,
    # the last model's, so a caller that wants them per sample need not score the set again.
    values: np.ndarray | None = field(default=None, repr=False)
    loglik: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_rows(cls, name: str, rows: Sequence[dict]) -> ProbeSet:
        """From gsmv.train.verifier.read_samples rows."""
        return cls(name, [r["prompt"] + r["tokens"] for r in rows], [len(r["prompt"]) for r in rows],
                   [r["problem_id"] for r in rows], np.array([r["label"] for r in rows], dtype=bool))


def probe(ver: Verifier, ps: ProbeSet, *, batch_size: int, max_len: int, lm: bool = False) -> dict[str, float]:
    """gsmv.train.verifier.val_metrics of the verifier's final values on a probe set, keys prefixed by its name.
    With `lm`, also how its LM half ranks the samples (a verifier whose value loses to its own likelihood
    has not learned to check): lm_* by the summed log-likelihood of the solution tokens, lm_mean_* by the
    mean, llr_* by the log-likelihood ratio against the start model, and lm_nll (mean negative
    log-likelihood per token of the right samples: how well it knows the task)."""
    from gsmv.train.verifier import val_metrics

    was = ver.training
    ver.eval()
    pad = pad_id_of(ver.tokenizer) if ver.tokenizer is not None else 0
    res = score_sequences(ver, ps.sequences, ps.starts, batch_size=batch_size, pad_id=pad, max_len=max_len,
                          share_prompts=True)
    ps.values = np.array([v for v, _ in res])
    ps.loglik = (sequence_loglik(ver.lm, ps.sequences, ps.starts, pad_id=pad, batch_size=batch_size,
                                 max_len=max_len) if lm else None)
    ver.train(was)
    m = val_metrics(ps.problem_ids, ps.values, ps.labels)
    keys = ("val_auc", "val_auc_within", "val_best_of_n", "val_base_accuracy", "val_brier")
    out = {f"{ps.name}_{k[4:]}": v for k, v in m.items() if k in keys}
    if lm:
        ll = ps.loglik
        if ps.start_loglik is None:
            ps.start_loglik = ll[:, 0].copy()
        for name, s in (("lm", ll[:, 0]), ("lm_mean", ll[:, 1]), ("llr", ll[:, 0] - ps.start_loglik)):
            m = val_metrics(ps.problem_ids, s, ps.labels)
            out |= {f"{ps.name}_{name}_auc_within": m["val_auc_within"],
                    f"{ps.name}_{name}_best_of_n": m["val_best_of_n"]}
        out[f"{ps.name}_lm_nll"] = float(-ll[ps.labels, 1].mean()) if ps.labels.any() else float("nan")
    return out


def train_curve(ver: Verifier, examples: Sequence[dict], *, vcfg: VerifierConfig, collate: Callable,
                loss_fn: Callable, steps: int, eval_every: int, probes: Sequence[ProbeSet], max_len: int,
                groups: Sequence[int] | None = None, log: Callable[[dict], None] | None = None,
                lm_probe: bool = False, probe_fn: Callable[..., dict[str, float]] | None = None) -> list[dict]:
    """Train `ver` for `steps` optimizer steps of vcfg.batch_size examples (epochs repeat with new orders),
    AdamW at vcfg.lr on vcfg.schedule over `steps` (constant: the curve's points are comparable), clipping at
    vcfg.max_grad_norm; evaluate every probe set at step 0, every eval_every steps and at the end. Returns the
    records (also passed to `log`): step, examples seen (all, and those with a value), mean training losses since
    the last record, seconds, and each probe's metrics (with lm_probe, also its LM half's: see `probe`; probe_fn
    replaces `probe`)."""
    opt = build_optimizer(ver, vcfg)
    sched = build_scheduler(opt, vcfg, steps)
    lengths = [len(ex["input_ids"]) for ex in examples]
    is_value = [any(ex["value_mask"]) for ex in examples]  # LM-only examples (references) carry no value
    records: list[dict] = []
    window: dict[str, float] = {}
    n_window, seen, seen_value, t0 = 0, 0, 0, time.perf_counter()

    def record(step: int) -> None:
        nonlocal window, n_window
        rec = {"step": step, "examples": seen, "value_examples": seen_value,
               "seconds": round(time.perf_counter() - t0, 1)}
        rec |= {f"train_{k}": v / max(n_window, 1) for k, v in window.items()}
        for ps in probes:
            rec |= (probe_fn or probe)(ver, ps, batch_size=64, max_len=max_len, lm=lm_probe)
        records.append(rec)
        if log is not None:
            log(rec)
        window, n_window = {}, 0

    record(0)
    ver.train()
    step, epoch = 0, 0
    while step < steps:
        for batch_ids in batch_plan(lengths, vcfg.batch_size, vcfg.seed, epoch, groups=groups):
            if step >= steps:
                break
            batch = collate([examples[i] for i in batch_ids])
            loss, stats = loss_fn(ver, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if vcfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(ver.parameters(), vcfg.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            seen += len(batch_ids)
            seen_value += sum(is_value[i] for i in batch_ids)
            n_window += 1
            for k, v in stats.items():
                window[k] = window.get(k, 0.0) + float(v)
            if step % eval_every == 0 or step == steps:
                record(step)
        epoch += 1
    return records
