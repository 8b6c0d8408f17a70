"""Value-guided step-level search: beam search over solution lines, ranked by the token-level verifier.

The token-level verifier predicts, after every token, the probability that the solution will end up
correct, so it can rank unfinished solutions. Search keeps K beams (partial solutions) per problem:

    step 0:  sample K·M first lines from the empty solution
    step s:  sample M next lines from each unfinished beam (a line ends at a newline token, EOS, or
             search.step_tokens tokens), score every new prefix with the verifier at its last token,
             keep the K best of (new prefixes + beams that already ended), repeat
    stop:    when no kept beam is unfinished, or after max_steps steps

A beam ends at EOS (a complete solution), at sample.max_new_tokens tokens, or at the last step.
Identical prefixes of one problem are scored once and kept once (at T=0.7 a small model often writes
the same line twice; two copies of one beam would halve the search). The answer is the ended beam
with the highest value (pick=value), or the answer most ended beams agree on, ties to the highest
value (pick=vote).

A solution never exceeds sample.max_new_tokens tokens (a line that crosses it is cut and its beam ends), the
cap best-of-N's samples have. A line is also cut at search.step_tokens; the next step continues it, but the
calculator sees only the current step's tokens, so an annotation open across that cut is not computed.

Cost accounting, the unit of the equal-budget comparison in gsmv.evaluate: generated_tokens counts
every token the sampler appended for the problem (a line's part beyond the budget included), calculator
results included and EOS excluded, as a best-of-N sample's n_tokens does; scored_tokens counts the tokens
of the sequences sent to the verifier (prompt + prefix, + EOS for a finished one; each scored prefix in
full: the scorer keeps no cache between steps; before any cut to verifier.max_len, as best-of-N's count).

Seeds are per (search seed, problem, step, beam rank, expansion), so a problem's search does not
depend on which problems share its batch (up to float rounding of the logits and values across batch
shapes, as for sampling), and a resumed search repeats it.

    gsmv search            (the pipeline stage when search.enabled; writes search/shard-NNNNN.parquet)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from gsmv import progress
from gsmv.artifacts import (
    Damage,
    MetricsLog,
    RunPaths,
    atomic_write_json,
    parquet_rows,
    read_json_or_none,
    shard_path,
    write_parquet,
)
from gsmv.config import RunConfig
from gsmv.data.answers import extract_answer, is_correct
from gsmv.errors import GsmvError
from gsmv.runtime import partial_state, pick_device, pick_dtype, setup_threads
from gsmv.sampling.base import Request, Sampler, SamplingParams, decode, request_seed

PICKS = ("value", "vote")

# (full sequences: prompt + solution tokens, + EOS for a finished one; where each solution starts, i.e. its
# prompt's length) -> the verifier's value at each sequence's last token.
ValueFn = Callable[[list[list[int]], list[int]], list[float]]


@dataclass(frozen=True)
class SearchParams:
    beams: int = 4  # K: beams kept per problem after every step
    expansions: int = 4  # M: next lines sampled from each unfinished beam (K·M from the empty solution)
    max_steps: int = 12  # lines at most; beams still open after the last step end there
    max_new_tokens: int = 256  # a solution's token budget (the sampler's own budget is one step)
    pick: str = "value"  # value | vote
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("beams", "expansions", "max_steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise GsmvError(f"search: {name} must be >= 1 (got {getattr(self, name)})")
        if self.pick not in PICKS:
            raise GsmvError(f"search: pick '{self.pick}': valid picks are {', '.join(PICKS)}")


@dataclass
class Beam:
    tokens: list[int] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    calc_calls: int = 0
    finished: bool = False  # reached EOS
    ended: bool = False  # no further step: finished, out of tokens, or out of steps
    value: float = float("nan")


@dataclass
class SearchResult:
    problem_id: str
    beams: int  # K this search ran with
    text: str
    tokens: list[int]
    final_answer: str | None
    is_correct: bool | None
    value: float  # the verifier's value of the chosen solution
    votes: float  # share of the final beams whose answer is the chosen one
    finished: bool
    generated_tokens: int
    scored_tokens: int
    steps: int

    def as_row(self) -> dict[str, Any]:
        return {"problem_id": self.problem_id, "beams": self.beams, "text": self.text, "tokens": self.tokens,
                "n_tokens": len(self.tokens), "final_answer": self.final_answer, "is_correct": self.is_correct,
                "value": self.value, "votes": self.votes, "finished": self.finished,
                "generated_tokens": self.generated_tokens, "scored_tokens": self.scored_tokens, "steps": self.steps}


SEARCH_SCHEMA = pa.schema([
    ("problem_id", pa.string()),
    ("beams", pa.int32()),
    ("text", pa.string()),
    ("tokens", pa.list_(pa.int32())),
    ("n_tokens", pa.int32()),
    ("final_answer", pa.string()),
    ("is_correct", pa.bool_()),
    ("value", pa.float64()),
    ("votes", pa.float64()),
    ("finished", pa.bool_()),
    ("generated_tokens", pa.int64()),
    ("scored_tokens", pa.int64()),
    ("steps", pa.int32()),
])


@dataclass
class _Problem:
    pid: str
    prompt: tuple[int, ...]
    reference: str | None
    kept: list[Beam] = field(default_factory=lambda: [Beam()])
    generated: int = 0
    scored: int = 0
    steps: int = 0

    @property
    def open(self) -> list[Beam]:
        return [b for b in self.kept if not b.ended]


def search(problems: Sequence[tuple[str, Sequence[int], str | None]], sampler: Sampler, value_fn: ValueFn,
           params: SearchParams, tokenizer: Any, eos_id: int | None) -> list[SearchResult]:
    """Search every problem (id, prompt ids, reference answer or None) together, batching each step's
    expansions of all problems through one sampler call and one value_fn call. The sampler must stop at
    newlines (SamplingParams.stop_at_newline); its max_new_tokens is the per-step cap."""
    if not getattr(sampler.params, "stop_at_newline", False):
        raise GsmvError("search: the sampler must stop at newlines (SamplingParams(stop_at_newline=True))")
    state = [_Problem(pid, tuple(prompt), ref) for pid, prompt, ref in problems]
    for step in range(params.max_steps):
        live = [p for p in state if p.open]
        if not live:
            break
        requests, parents = [], {}
        for p in live:
            p.steps = step + 1
            per_beam = params.expansions * (params.beams if step == 0 else 1)
            for rank, beam in enumerate(p.open):
                for m in range(per_beam):
                    idx = len(parents)
                    parents[idx] = (p, beam)
                    seed = request_seed(params.seed, f"{p.pid}\x1fstep{step}\x1fbeam{rank}", m)
                    requests.append(Request(p.pid, idx, p.prompt + tuple(beam.tokens), seed))
        children: dict[int, list[Beam]] = {id(p): [] for p in live}
        last = step == params.max_steps - 1
        for s in sampler.generate(requests):
            p, beam = parents[s.sample_idx]
            p.generated += s.n_tokens  # the cost: all it generated, a part cut off below included
            room = params.max_new_tokens - len(beam.tokens)
            cut = s.n_tokens > room  # the solution's budget ends inside this line
            new, forced = (s.tokens[:room], s.forced[:room]) if cut else (s.tokens, s.forced)
            child = Beam(tokens=beam.tokens + new, forced=beam.forced + forced,
                         calc_calls=beam.calc_calls + s.calc_calls, finished=s.finished and not cut)
            child.ended = child.finished or len(child.tokens) >= params.max_new_tokens or last
            children[id(p)].append(child)
        # Score each problem's distinct new prefixes (sampler output comes in completion order: sort for
        # a deterministic keep order among equal values).
        todo: list[tuple[_Problem, Beam]] = []
        for p in live:
            seen = {(tuple(b.tokens), b.finished) for b in p.kept if b.ended}
            for child in sorted(children[id(p)], key=lambda b: (b.tokens, b.finished)):
                key = (tuple(child.tokens), child.finished)
                if key not in seen:
                    seen.add(key)
                    todo.append((p, child))
        seqs = [list(p.prompt) + b.tokens + ([eos_id] if b.finished and eos_id is not None else []) for p, b in todo]
        values = value_fn(seqs, [len(p.prompt) for p, _ in todo]) if seqs else []
        for (p, b), seq, v in zip(todo, seqs, values, strict=True):
            b.value = float(v)
            p.scored += len(seq)
        fresh: dict[int, list[Beam]] = {id(p): [] for p in live}
        for p, b in todo:
            fresh[id(p)].append(b)
        for p in live:
            pool = [b for b in p.kept if b.ended] + fresh[id(p)]
            # Stable sort: among equal values, beams that ended earlier, then new prefixes in token order.
            p.kept = sorted(pool, key=lambda b: -b.value)[:params.beams]
    return [_result(p, params, tokenizer) for p in state]


def _result(p: _Problem, params: SearchParams, tokenizer: Any) -> SearchResult:
    final = [b for b in p.kept if b.ended] or p.kept
    answers = [extract_answer(decode(tokenizer, b.tokens)) for b in final]
    if params.pick == "vote" and any(a is not None for a in answers):
        counts = Counter(a for a in answers if a is not None)
        top = max(counts.values())
        tied = {a for a, c in counts.items() if c == top}
        best = max((i for i, a in enumerate(answers) if a in tied), key=lambda i: final[i].value)
    else:
        best = max(range(len(final)), key=lambda i: final[i].value)
    chosen = final[best]
    text = decode(tokenizer, chosen.tokens)
    votes = sum(a == answers[best] for a in answers) / len(answers) if answers[best] is not None else 0.0
    return SearchResult(problem_id=p.pid, beams=params.beams, text=text, tokens=list(chosen.tokens),
                        final_answer=answers[best],
                        is_correct=None if p.reference is None else is_correct(text, p.reference),
                        value=chosen.value, votes=votes, finished=chosen.finished, generated_tokens=p.generated,
                        scored_tokens=p.scored, steps=p.steps)


def verifier_value_fn(verifier: Any, *, batch_size: int, pad_id: int, max_len: int | None = None,
                      generator_tokenizer: Any = None, aggregate: str = "last") -> ValueFn:
    """value_fn over a gsmv Verifier: the value at each sequence's last token (gsmv.models.verifier.score_sequences),
    or with `aggregate` (score.aggregate: min, product, mean) that of its values at the step ends so far and at
    the last token (gsmv.steps), read in the ids the verifier read.

    Sequences are in the generator's ids. A verifier that reads text (Verifier.reads, another vocabulary) gets
    each one re-encoded with its own tokenizer first: the prompt's text, then the solution's text, then its EOS
    when the generator's EOS ended the solution; `generator_tokenizer` decodes them."""
    from gsmv.models.verifier import sample_solution_ids, score_sequences

    reads = getattr(verifier, "reads", "tokens")
    if reads == "text" and generator_tokenizer is None:
        raise GsmvError("a verifier that reads text needs the generator's tokenizer to decode the samples")
    prompt_memo: dict[tuple[int, ...], list[int]] = {}

    def translate(seq: list[int], start: int) -> tuple[list[int], int]:
        from gsmv.models.tokenizer import encode_prompt

        key = tuple(seq[:start])
        if key not in prompt_memo:
            text = generator_tokenizer.decode(list(key), skip_special_tokens=True)
            prompt_memo[key] = encode_prompt(verifier.tokenizer, text)
        sol = list(seq[start:])
        finished = bool(sol) and sol[-1] == generator_tokenizer.eos_token_id
        text = generator_tokenizer.decode(sol[:-1] if finished else sol, skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)
        prompt = prompt_memo[key]
        return prompt + sample_solution_ids("text", verifier.tokenizer, None, finished, text), len(prompt)

    def fn(seqs: list[list[int]], starts: list[int]) -> list[float]:
        if reads == "text":
            pairs = [translate(s, st) for s, st in zip(seqs, starts, strict=True)]
            seqs, starts = [p[0] for p in pairs], [p[1] for p in pairs]
        # One problem's beams share its prompt: it is read once per batch (share_prompts).
        out = score_sequences(verifier, seqs, starts, batch_size=batch_size, pad_id=pad_id, max_len=max_len,
                              share_prompts=True)
        if aggregate == "last":
            return [v for v, _ in out]
        from gsmv.steps import aggregate_sequences

        tok = verifier.tokenizer if reads == "text" else generator_tokenizer
        if tok is None:
            raise GsmvError(f"score.aggregate={aggregate} needs the generator's tokenizer to find the steps")
        return aggregate_sequences(tok, [s[st:] for s, st in zip(seqs, starts, strict=True)],
                                   [v for _, v in out], [f for f, _ in out], aggregate)

    return fn



# ---------------------------------------------------------------- the pipeline stage


def step_sampler(cfg: RunConfig, model_dir: Path) -> Sampler:
    """The configured sampler over the generator, in step mode with search's temperature."""
    from gsmv.sample import make_sampler

    sc = cfg.search
    params = SamplingParams(temperature=sc.temperature, top_p=sc.top_p, max_new_tokens=sc.step_tokens,
                            calculator=cfg.sample.calculator, stop_at_newline=True)
    return make_sampler(cfg, model_dir, params, batch_size=sc.batch_size)


def search_params(cfg: RunConfig, beams: int) -> SearchParams:
    sc = cfg.search
    return SearchParams(beams=beams, expansions=sc.expansions, max_steps=sc.max_steps,
                        max_new_tokens=cfg.sample.max_new_tokens, pick=sc.pick, seed=sc.seed)


def main(cfg: RunConfig) -> dict[str, Any]:
    """Search the first search.problems test problems for every K in search.beams; one shard per
    search.problems_per_shard problems (all K), written atomically, skipped when it exists (resume)."""
    from gsmv.data.gsm8k import format_prompt
    from gsmv.data.tasks import load_split
    from gsmv.models.tokenizer import encode_prompt
    from gsmv.models.verifier import input_limit, load_verifier, pad_id_of

    state = partial_state(cfg)
    setup_threads(cfg)
    paths = RunPaths(cfg.run_dir)
    problems = load_split(cfg, "test")
    if cfg.search.problems > 0:
        problems = problems[:cfg.search.problems]
    if not problems:
        raise GsmvError("search: the test split has no problems")
    per = cfg.search.problems_per_shard
    shards = [problems[i:i + per] for i in range(0, len(problems), per)]
    mine = [i for i in range(len(shards)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not shard_path(paths.search, i).exists()]
    t0 = time.time()
    totals = {"problems": 0, "generated_tokens": 0, "scored_tokens": 0}
    if todo:
        for folder, what in ((paths.generator_final, "fine-tuned generator (run finetune first)"),
                             (paths.verifier_final, "trained verifier (run train-verifier first)")):
            if not (folder / "config.json").is_file():
                raise GsmvError(f"{folder}: no {what}")
        sampler = step_sampler(cfg, paths.generator_final)
        device = pick_device(cfg)
        verifier, vtok = load_verifier(paths.verifier_final, dtype=pick_dtype(cfg, device), device=device)
        tok = sampler.tokenizer  # type: ignore[attr-defined]
        value_fn = verifier_value_fn(verifier, batch_size=cfg.score.batch_size, pad_id=pad_id_of(vtok),
                                     max_len=input_limit(verifier.lm, cfg.verifier.max_len), generator_tokenizer=tok,
                                     aggregate=cfg.score.aggregate)
        for i in progress.bar(todo, desc="search", unit="shard", disable=not state.is_local_main_process):
            batch = [(p.id, tuple(encode_prompt(tok, format_prompt(p.question))), p.answer) for p in shards[i]]
            rows = []
            for k in cfg.search.beams:
                for r in search(batch, sampler, value_fn, search_params(cfg, k), tok, tok.eos_token_id):
                    rows.append(r.as_row())
                    totals["generated_tokens"] += r.generated_tokens
                    totals["scored_tokens"] += r.scored_tokens
            totals["problems"] += len(batch)
            write_parquet(shard_path(paths.search, i), pa.Table.from_pylist(rows, schema=SEARCH_SCHEMA))
    secs = time.time() - t0
    if todo and state.is_main_process:
        MetricsLog(paths.metrics, "search").log(rank=0, shards=len(todo), seconds=round(secs, 2),
                                                beams=list(cfg.search.beams), **totals)
    state.wait_for_everyone()
    if state.is_main_process and all(shard_path(paths.search, i).exists() for i in range(len(shards))):
        settings = {k: v for k, v in vars(cfg.search).items() if k not in ("enabled", "batch_size", "problems")}
        atomic_write_json(paths.search / "done.json", {"shards": len(shards), "problems": len(problems), **settings,
                                                       "beams": list(cfg.search.beams),
                                                       "max_new_tokens": cfg.sample.max_new_tokens})
    return {"shards": len(shards), "searched_here": len(todo), **totals}


def check_outputs(paths: RunPaths, cfg: RunConfig) -> list[Damage]:
    """What is damaged in finished search results (the pipeline's check): every shard done.json counts is readable
    and holds (its problems) x (beam counts) rows."""
    folder = paths.search
    info = read_json_or_none(folder / "done.json")
    try:
        shards, problems, beams = int(info["shards"]), int(info["problems"]), len(info["beams"])
    except (TypeError, KeyError, ValueError):
        return [(None, f"{folder / 'done.json'} is missing or damaged")]
    per = cfg.search.problems_per_shard
    out: list[Damage] = []
    for i in range(shards):
        p = shard_path(folder, i)
        rows, want = parquet_rows(p), min(per, problems - i * per) * beams
        if not p.exists():
            out.append((None, f"{p} is missing"))
        elif rows != want:
            out.append((p, f"{p} is not readable Parquet" if rows is None else f"{p} holds {rows} rows, not {want}"))
    return out
