"""A verifier's learning curve on a run folder's samples: within-problem AUC and best-of-N against value
examples seen, on a fixed subset of its own training samples (fit) and on the val samples (generalisation).

    python docs/research/scripts/verifier_curve.py --run runs/synth --out runs/curves/base --steps 3000 --eval-every 250
    python docs/research/scripts/verifier_curve.py --plot docs/research/verifier_curve.png runs/curves/*/curve.jsonl

The verifier starts from the run's generator/final and is trained as the train-verifier stage trains it (the
same examples, batch layout and loss: gsmv.train.verifier; the loop: gsmv.train.curve) at a constant learning
rate, evaluated every --eval-every steps. Every knob that the stage reads from cfg.verifier is a key=value
override (verifier.lr=3e-3 verifier.lm_weight=0 ...). --problems/--mixed/--per-problem choose the training
samples; with a few hundred mixed-label problems and many steps this is the memorisation test of issue 20.

--lm-probe also ranks the probes by the verifier's own LM (gsmv.train.curve.probe), and the last model's val scores
go to val_scores.npz; --combine FOLDERS ranks those by value, likelihood and both, and lets each ranking's top k
samples vote (the paper's Fig. 7). --likelihood-value trains an experimental value (not in gsmv): the head's logit
plus a learned weight times the log-likelihood of the solution so far under the verifier's own LM (with
--likelihood-ref, the log-likelihood ratio against the start: an implicit PRM). --lm-only trains the LM half alone
(a curve of its likelihood's ranking; --save-lm keeps the LM for docs/research/scripts/bench_generator_quality.py --model).
--fresh-problems N trains on the generator's samples of N newly drawn problems it never trained on, instead of
samples/train (with --and-train, beside them).

    python docs/research/scripts/verifier_curve.py --run runs/synth-v100 --out runs/curves4/lm-fresh --dedupe --lm-probe \
        verifier.lm_weight=1 verifier.lm_data=fresh verifier.group_samples=10
    python docs/research/scripts/verifier_curve.py --combine runs/curves4/lm-fresh
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from gsmv.artifacts import RunPaths, os_error_message
from gsmv.config import load_config
from gsmv.errors import GsmvError
from gsmv.models.likelihood import sequence_loglik
from gsmv.models.verifier import input_limit, pad_id_of
from gsmv.train import verifier as tv
from gsmv.train.curve import ProbeSet, probe, train_curve


def choose_rows(rows: list[dict], problems: int, mixed: bool, per_problem: int, dedupe: bool) -> list[dict]:
    """The first `problems` problems' rows (in shard order; only problems with both labels when `mixed`), at most
    `per_problem` of each (0: all), identical samples of one problem once when `dedupe`."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["problem_id"], []).append(r)
    out, n = [], 0
    for rs in by.values():
        if dedupe:
            rs = list({tuple(r["tokens"]): r for r in rs}.values())
        rs = rs[:per_problem] if per_problem else rs
        if mixed and len({r["label"] for r in rs}) < 2:  # mixed among the samples kept
            continue
        out += rs
        n += 1
        if problems and n == problems:
            break
    return out


def fresh_sample_rows(cfg, tok, n_problems: int, k: int, cache: Path) -> list[dict]:
    """read_samples-style rows of `k` samples (T = cfg.sample.temperature, the calculator on) by the run's generator
    for each of `n_problems` newly drawn train-distribution problems that the generator never trained on
    (gsmv.data.tasks.fresh_problems, stream "verifier": drawn apart from the LM half's fresh references), labelled by
    their final answer; kept in `cache` (a JSON lines file) for a rerun."""
    from gsmv.data.gsm8k import format_prompt
    from gsmv.data.tasks import fresh_problems
    from gsmv.models.tokenizer import encode_prompt
    from gsmv.models.verifier import prompt_ids, solution_ids
    from gsmv.sample import make_sampler
    from gsmv.sampling.base import Request, SamplingParams, request_seed

    problems = {p.id: p for p in fresh_problems(cfg, n_problems, stream="verifier")}
    if not cache.exists():
        params = SamplingParams(temperature=cfg.sample.temperature, top_p=cfg.sample.top_p,
                                max_new_tokens=cfg.sample.max_new_tokens, calculator=True)
        sampler = make_sampler(cfg, RunPaths(cfg.run_dir).generator_final, params)
        reqs = [Request(p.id, j, tuple(encode_prompt(sampler.tokenizer, format_prompt(p.question))),
                        request_seed(cfg.sample.seed, p.id, j), p.answer) for p in problems.values() for j in range(k)]
        t0 = time.time()
        tmp = cache.with_suffix(".tmp")
        with tmp.open("w") as f:
            for smp in sampler.generate(reqs):
                f.write(json.dumps({"problem_id": smp.problem_id, "sample_idx": smp.sample_idx, "tokens": smp.tokens,
                                    "finished": smp.finished, "is_correct": smp.is_correct}) + "\n")
        tmp.rename(cache)
        print(f"sampled {len(reqs)} fresh-problem samples in {time.time() - t0:.0f} s", flush=True)
    recs = [json.loads(line) for line in cache.read_text().splitlines()]
    recs.sort(key=lambda r: (r["problem_id"], r["sample_idx"]))
    prompts = {pid: prompt_ids(tok, p.question) for pid, p in problems.items()}
    return [{"problem_id": r["problem_id"], "prompt": prompts[r["problem_id"]],
             "tokens": solution_ids(r["tokens"], r["finished"], tok.eos_token_id), "label": bool(r["is_correct"]),
             "wrong_char": None} for r in recs]


def likelihood_value_loss(vcfg, terms: bool = False, ref_lm=None):
    """The joint loss (gsmv.train.verifier.verifier_loss) with the value's logit at each solution token plus
    ver.ll_weight times the log-likelihood of the solution so far under the verifier's own LM (the tokens up to
    and including that one): a value that starts from what the LM half knows. Plain layout only (one example a
    row: the running sum is along the row). With `ref_lm` (a frozen copy of the start) the term is the
    log-likelihood ratio against it, as in DPO's implicit reward and the implicit PRM (Yuan et al. 2024): the
    value's gradient reaches every token's log-probability."""
    import torch.nn.functional as F

    def loss_fn(ver, batch):
        out = ver(batch["input_ids"], batch["attention_mask"], return_logits=True)
        ids, sol = batch["input_ids"], batch["value_mask"].float()  # token level: value_mask = solution tokens
        logp = F.log_softmax(out.logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None])[..., 0]
        logp = torch.cat([torch.zeros_like(logp[:, :1]), logp], 1)  # position j: log p(token j | tokens < j)
        if ref_lm is not None:
            with torch.no_grad():
                ref = F.log_softmax(ref_lm(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1].float(), -1)
                ref = ref.gather(2, ids[:, 1:, None])[..., 0]
            logp = logp - torch.cat([torch.zeros_like(ref[:, :1]), ref], 1)
        term = ver.ll_weight * torch.cumsum(logp * sol, 1)
        if terms:  # the likelihood term at each value position (calibration)
            return term.reshape(-1)[batch["value_idx"]]
        z = out.value_logits + term
        lm = out.logits.reshape(-1, out.logits.shape[-1])[batch["lm_src"]] if vcfg.lm_weight > 0 else None
        return tv.verifier_loss(z, lm, batch, loss=vcfg.loss, lm_weight=vcfg.lm_weight,
                                rank_weight=vcfg.rank_weight)

    return loss_fn


def probe_loglik(ver, ps, *, batch_size, max_len):
    """The probe set's (sum, mean) log-likelihoods under the verifier's LM as of its last probe: those the LM probe
    kept, else computed now (eval mode) and kept on `ps`, so the same model's are not computed twice."""
    if ps.loglik is None:
        was = ver.training
        ver.eval()
        ps.loglik = sequence_loglik(ver.lm, ps.sequences, ps.starts, pad_id=pad_id_of(ver.tokenizer),
                                    batch_size=batch_size, max_len=max_len)
        ver.train(was)
    return ps.loglik


def likelihood_value_probe(ver, ps, *, batch_size, max_len, lm):
    """curve.probe, its value metrics renamed head_* (the head alone), and the value with the likelihood term as
    the value's metrics (its logit + ll_weight · the solution's log-likelihood: the score at the last token)."""
    from gsmv.train.verifier import val_metrics

    out = probe(ver, ps, batch_size=batch_size, max_len=max_len, lm=lm)  # scores kept on ps
    out = {(k.replace(f"{ps.name}_", f"{ps.name}_head_", 1) if not k.startswith(f"{ps.name}_l") else k): v
           for k, v in out.items()}
    v, ll = ps.values, probe_loglik(ver, ps, batch_size=batch_size, max_len=max_len)  # the term needs it
    if (v >= 1.0).any() or (v <= 0.0).any():  # the logit is recovered from float32 sigmoids: order lost there
        raise SystemExit("likelihood_value_probe: the head's value saturated (logit beyond ~16); lower the init")
    w = float(ver.ll_weight.detach())
    term = ll[:, 0] - ps.start_loglik if getattr(ver, "ll_ratio", False) else ll[:, 0]
    m = val_metrics(ps.problem_ids, np.log(v) - np.log1p(-v) + w * term, ps.labels)
    return out | {f"{ps.name}_auc_within": m["val_auc_within"], f"{ps.name}_best_of_n": m["val_best_of_n"],
                  f"{ps.name}_auc": m["val_auc"], "ll_weight": w}


def run(a: argparse.Namespace) -> None:
    if a.and_train and not a.fresh_problems:
        raise SystemExit("--and-train adds the run's samples to --fresh-problems' samples: give --fresh-problems N")
    # A constant learning rate unless overridden: every point of the curve is a model one could stop at.
    cfg = load_config(RunPaths(a.run).config, ["verifier.schedule=constant", *a.overrides])
    vcfg = cfg.verifier
    torch.set_num_threads(a.threads)
    torch.manual_seed(vcfg.seed)
    ver, tok, _ = tv.build_initial_verifier(cfg)
    max_len = input_limit(ver.lm, vcfg.max_len)
    all_rows, val_rows, refs = tv.read_training_data(cfg, tok)
    if a.fresh_problems:  # the verifier's samples on problems its generator never saw, instead of samples/train
        Path(a.out).mkdir(parents=True, exist_ok=True)
        fresh = fresh_sample_rows(cfg, tok, a.fresh_problems, a.fresh_samples, Path(a.out) / "fresh_samples.jsonl")
        all_rows = all_rows + fresh if a.and_train else fresh
    rows = choose_rows(all_rows, a.problems, a.mixed, a.per_problem, a.dedupe)
    examples, n_value, _, _ = tv.build_examples(rows, refs, vcfg, tok, max_len)
    collate = tv.collate_fn(pad_id_of(tok), vcfg.pack_tokens)
    tv.calibrate(ver, examples[:n_value], collate, vcfg.batch_size)
    if a.lm_only:  # the LM half alone: does its likelihood rank the samples better as it learns the task?
        if not len(examples) - n_value:
            raise SystemExit("--lm-only needs LM examples: verifier.lm_weight > 0 with lm_data reference or fresh")
        examples, n_value = examples[n_value:], 0
    loss_fn, probe_fn = tv.make_loss_fn(vcfg), None
    if a.likelihood_value:
        if vcfg.pack_tokens or vcfg.level != "token":
            raise SystemExit("--likelihood-value needs verifier.pack_tokens=0 and verifier.level=token")
        ver.ll_weight = torch.nn.Parameter(torch.tensor(a.likelihood_value_init))  # before the optimizer is built
        ref_lm = None
        if a.likelihood_ref:
            if not a.lm_probe:
                raise SystemExit("--likelihood-ref needs --lm-probe (the probe keeps the start's likelihood)")
            import copy

            ref_lm = copy.deepcopy(ver.lm).eval().requires_grad_(False)
            ver.ll_ratio = True
        # Keep the calibration: shift the bias by the term's mean over the value positions of 20 batches.
        with torch.no_grad():
            batches = [collate(examples[i:i + vcfg.batch_size])
                       for i in range(0, min(20 * vcfg.batch_size, n_value), vcfg.batch_size)]
            zero = likelihood_value_loss(vcfg, terms=True, ref_lm=ref_lm)
            shift = np.mean(np.concatenate([zero(ver, b).numpy() for b in batches]))
            ver.bias -= float(shift)
        loss_fn, probe_fn = likelihood_value_loss(vcfg, ref_lm=ref_lm), likelihood_value_probe
    # The fit probe: the training samples of its first mixed-label problems (a fixed subset, seen in training).
    fit_rows = choose_rows(rows, a.fit_problems, True, 0, False)
    probes = [ProbeSet.from_rows("fit", fit_rows), ProbeSet.from_rows("val", val_rows)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"run": a.run, "overrides": a.overrides, "lm_only": a.lm_only, "problems": len({r["problem_id"] for r in rows}),
            "value_examples": n_value, "lm_examples": len(examples) - n_value, "fit_samples": len(fit_rows),
            "val_samples": len(val_rows), "steps": a.steps, "batch_size": vcfg.batch_size, "lr": vcfg.lr,
            "date": time.strftime("%Y-%m-%d")}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))
    log_path = out / "curve.jsonl"
    log_path.write_text("")

    def log(rec: dict) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()), flush=True)

    train_curve(ver, examples, vcfg=vcfg, collate=collate, loss_fn=loss_fn, steps=a.steps,
                eval_every=a.eval_every, probes=probes, max_len=max_len,
                groups=tv.batch_groups([ex.get("group", -1) for ex in examples], vcfg), log=log,
                lm_probe=a.lm_probe, probe_fn=probe_fn)
    if a.save_lm:  # the trained LM (a generator: docs/research/scripts/bench_generator_quality.py --model)
        ver.lm.save_pretrained(a.save_lm)
        tok.save_pretrained(a.save_lm)
    # The last model's scores of every val sample (its last evaluation's), for rankings that combine them.
    val = probes[1]
    ll = probe_loglik(ver, val, batch_size=64, max_len=max_len)
    np.savez_compressed(out / "val_scores.npz", problem_id=np.array(val.problem_ids), label=val.labels,
                        value=val.values, loglik=ll[:, 0], loglik_mean=ll[:, 1],
                        start_loglik=val.start_loglik if val.start_loglik is not None else np.full(len(ll), np.nan),
                        ll_weight=float(ver.ll_weight.detach()) if hasattr(ver, "ll_weight") else 0.0, ll_ratio=bool(getattr(ver, "ll_ratio", False)))


def plot(out: str, logs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for path in logs:
        recs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        name = Path(path).parent.name if Path(path).name == "curve.jsonl" else Path(path).stem  # runs/ or docs/ copies
        recs = [r for r in recs if r["examples"] > 0]  # the untrained start has no place on a log axis
        x = np.array([r.get("value_examples", r["examples"]) for r in recs])  # older records: value examples only
        line, = axes[0].plot(x, [r["val_auc_within"] for r in recs], marker="o", ms=3, label=f"{name} val")
        axes[0].plot(x, [r["fit_auc_within"] for r in recs], ls="--", color=line.get_color(), label=f"{name} fit")
        if "val_lm_auc_within" in recs[0]:  # curves run with --lm-probe: the same model's own likelihood
            axes[0].plot(x, [r["val_lm_auc_within"] for r in recs], ls=":", color=line.get_color(),
                         label=f"{name} val, own likelihood")
        axes[1].plot(x, [100 * r["val_best_of_n"] for r in recs], marker="o", ms=3, color=line.get_color(), label=name)
    axes[0].axhline(0.5, color="grey", lw=0.8)
    axes[0].set(xscale="log", xlabel="value examples seen", ylabel="within-problem AUC",
                title="ranking one problem's samples (dashed: its own training samples;\ndotted: by its own likelihood)")
    axes[1].set(xscale="log", xlabel="value examples seen", ylabel="val best-of-N (%)", title="val best-of-N (N: the run's val samples a problem)")
    for ax in axes:
        ax.grid(alpha=0.3)
    # below the panels: with many curves a legend inside hides them
    axes[0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.16), ncol=3)
    axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.16), ncol=2)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def combine(folders: list[str]) -> None:
    """Rank each folder's val samples (val_scores.npz) by the value, the likelihood (sum, mean), the ratio to the
    start, and value + b * likelihood with b chosen on half the problems and scored on the other half (two
    folds, each problem scored once): within-problem AUC and best-of-N."""
    from gsmv.train.verifier import val_metrics

    print("| run | ranking | val within-problem AUC | val best-of-N |")
    print("|---|---|---:|---:|")
    votes = {}
    for folder in folders:
        d = np.load(Path(folder) / "val_scores.npz")
        pid, lab = d["problem_id"], d["label"]
        z = np.log(d["value"]) - np.log1p(-d["value"])  # the value's logit: additive with a log-likelihood
        rankings = {"value": z, "log-likelihood (sum)": d["loglik"], "log-likelihood (mean)": d["loglik_mean"]}
        if np.isfinite(d["start_loglik"]).all():  # kept by --lm-probe runs only
            rankings |= {"ratio to the start": d["loglik"] - d["start_loglik"], "start log-likelihood": d["start_loglik"]}
        w = float(d["ll_weight"]) if "ll_weight" in d else 0.0
        if w:  # a --likelihood-value run: "value" above is its head alone
            ratio = bool(d["ll_ratio"]) if "ll_ratio" in d else False  # --likelihood-ref: the term is the ratio
            term = d["loglik"] - d["start_loglik"] if ratio else d["loglik"]
            rankings[f"value with its likelihood {'ratio ' if ratio else ''}term (weight {w:.3f})"] = z + w * term
        problems = sorted(set(pid.tolist()))
        fold = np.isin(pid, problems[::2])
        grid = [0.0, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100]
        mixed = np.zeros_like(z)
        chosen = []
        for pick in (fold, ~fold):  # b chosen on `pick`, applied to the other half
            best = max(grid, key=lambda b: val_metrics(pid[pick], (b * z + d["loglik"])[pick], lab[pick])["val_auc_within"])
            mixed[~pick] = (best * z + d["loglik"])[~pick]
            chosen.append(best)
        rankings[f"b * value + log-likelihood (b chosen on the other half: {chosen})"] = mixed
        for name, s in rankings.items():
            m = val_metrics(pid, s, lab)
            print(f"| {Path(folder).name} | {name} | {m['val_auc_within']:.3f} | {100 * m['val_best_of_n']:.1f} |")
        votes[folder] = rankings, pid, lab
    for folder, (rankings, pid, lab) in votes.items():
        vote_table(folder, rankings, pid, lab)


@functools.cache
def val_answers(run: str) -> tuple[np.ndarray, np.ndarray]:
    """(problem ids, normalized final answers) of a run's labelled samples/val rows, in the order the curve read
    them (shard order, as gsmv.train.verifier.read_samples); read once for all the folders of one run."""
    from gsmv.artifacts import read_shards
    from gsmv.data.answers import normalize_answer

    t = read_shards(RunPaths(run).samples("val"), ["problem_id", "final_answer", "is_correct"]).table
    keep = np.array([ok is not None for ok in t.column("is_correct").to_pylist()])
    # normalized as the evaluator's votes are (gsmv.run_data), so equal answers written differently vote together
    ans = [normalize_answer(a) if a is not None else None for a in t.column("final_answer").to_pylist()]
    return np.array(t.column("problem_id").to_pylist())[keep], np.array(ans, dtype=object)[keep]


def vote_table(folder: str, rankings: dict[str, np.ndarray], pid: np.ndarray, lab: np.ndarray) -> None:
    """The paper's Fig. 7 on a curve folder's val samples: the k top-ranked samples of each problem vote on the
    answer (gsmv.metrics.top_k_voting; k = N is majority@N), by each ranking, with a 95% paired bootstrap CI (over
    problems) of the difference from majority@N at each k. The answers come from the run's samples/val."""
    from gsmv.evaluate import power_grid
    from gsmv.metrics import bootstrap_ci, top_k_voting

    run = json.loads((Path(folder) / "meta.json").read_text())["run"]
    run_pid, ans = val_answers(run)
    if not np.array_equal(run_pid, pid):
        raise SystemExit(f"{folder}: {run}'s samples/val are not the samples this curve scored")
    problems = np.array(list(dict.fromkeys(pid.tolist())))
    n = len(pid) // len(problems)
    if len(pid) != n * len(problems) or not (pid.reshape(-1, n) == problems[:, None]).all():
        raise SystemExit(f"{folder}: top-k voting needs the same number of samples, in a block, for every problem")
    ks = power_grid(n)
    print(f"\n{Path(folder).name}: top-k voting, val (k = {n}: majority@{n}); "
          f"in brackets: the difference from majority@{n}, 95% paired bootstrap CI over {len(problems)} problems")
    print("| ranking | " + " | ".join(f"k={k}" for k in ks) + " |")
    print("|---|" + "---:|" * len(ks))
    shape = (len(problems), n)
    for name, s in rankings.items():
        acc = top_k_voting(s.reshape(shape), ans.reshape(shape).tolist(), lab.reshape(shape), ks)  # [len(ks), P]
        lo, hi = bootstrap_ci(acc - acc[-1], resamples=2000, seed=0)
        cells = [f"{100 * a.mean():.1f} [{100 * lo_:+.1f}, {100 * hi_:+.1f}]" for a, lo_, hi_ in zip(acc, lo, hi, strict=True)]
        print(f"| {name} | " + " | ".join(cells[:-1] + [f"{100 * acc[-1].mean():.1f}"]) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/synth")
    ap.add_argument("--out", default="runs/curves/default")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--problems", type=int, default=0, help="train problems to use (0: all sampled)")
    ap.add_argument("--mixed", action="store_true", help="only problems whose samples have both labels")
    ap.add_argument("--per-problem", type=int, default=0, help="samples per problem at most (0: all)")
    ap.add_argument("--dedupe", action="store_true", help="identical samples of one problem once")
    ap.add_argument("--fit-problems", type=int, default=100, help="mixed-label training problems in the fit probe")
    ap.add_argument("--lm-probe", action="store_true",
                    help="also rank the probes by the verifier's own log-likelihood (and its ratio to the start's)")
    ap.add_argument("--likelihood-value", action="store_true",
                    help="experimental value: its logit plus a learned weight times the log-likelihood of the "
                         "solution so far under the verifier's own LM (plain layout, token level)")
    ap.add_argument("--likelihood-value-init", type=float, default=0.0, help="the weight's start")
    ap.add_argument("--likelihood-ref", action="store_true",
                    help="with --likelihood-value: the log-likelihood ratio against the start model instead")
    ap.add_argument("--lm-only", action="store_true",
                    help="train only the LM half (its LM examples; no value examples): with --lm-probe, a curve of "
                         "the likelihood's ranking against LM examples")
    ap.add_argument("--fresh-problems", type=int, default=0,
                    help="train on the generator's samples of this many newly drawn problems (never trained on) "
                         "instead of the run's samples/train")
    ap.add_argument("--fresh-samples", type=int, default=100, help="samples of each fresh problem")
    ap.add_argument("--and-train", action="store_true",
                    help="with --fresh-problems: the run's samples/train as well (more distinct samples per pass)")
    ap.add_argument("--save-lm", default="", help="save the last model's LM and tokenizer to this folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default="", help="write this PNG from the curve.jsonl files given instead of training")
    ap.add_argument("--combine", action="store_true",
                    help="rank the val samples of the curve folders given by value, likelihood and both instead of training")
    ap.add_argument("overrides", nargs="*", help="config overrides (verifier.lr=3e-3 ...) or, with --plot, logs")
    a = ap.parse_args()
    try:  # bad input (a folder without its files, a run without samples): one line, as gsmv's CLI says it
        if a.plot:
            plot(a.plot, a.overrides)
        elif a.combine:
            combine(a.overrides)
        else:
            run(a)
    except GsmvError as e:
        raise SystemExit(f"verifier_curve: error: {e}") from None
    except OSError as e:
        raise SystemExit(f"verifier_curve: error: {os_error_message(e)}") from None


if __name__ == "__main__":
    main()
