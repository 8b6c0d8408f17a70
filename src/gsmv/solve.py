"""`gsmv solve`: answer new questions with a trained run's generator and verifier.

    gsmv solve --run runs/synth "Tess keeps 17 postcards at home. Pia has 8 postcards less than Tess. How many postcards does Pia have?"
    gsmv solve --run runs/synth --strategy search --json --file questions.jsonl
    echo "Tess keeps 17 postcards ..." | gsmv solve --run runs/synth

A run answers questions like its training problems and nothing else: the default run (runs/synth) is a small
model trained from scratch on the synthetic GSM-style task (gsmv.data.synth: templated word problems, 1-4
operations on small whole numbers, a 189-word vocabulary), and it gives any other question a number and a
confident verifier value all the same. Each answer says whether the question is unlike the run's train
questions (gsmv.familiarity: words its train questions never use); such an answer means nothing.

Strategies (the ones `gsmv evaluate` measures):
  best-of-n  N samples at sample.temperature, the one the verifier values most (the paper's method)
  vote       N samples, the most common final answer (no verifier needed); the shown solution is that
             answer's highest-valued sample
  top-k      N samples, the k the verifier values most vote (paper Fig. 7b)
  search     value-guided step-level search with `--beams` beams (gsmv.search, the run's search settings)

The generator and verifier are loaded once; all questions are sampled together. Samples are seeded by
(sample.seed, question text, sample index), search by (search.seed, question text, step, beam, expansion),
so the same question gets the same answer on every call.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsmv.artifacts import RunPaths, iter_jsonl
from gsmv.errors import GsmvError
from gsmv.familiarity import Check, Familiarity

STRATEGIES = ("best-of-n", "vote", "top-k", "search")


@dataclass
class Answer:
    question: str
    answer: str | None
    solution: str
    value: float | None  # the verifier's value of the shown solution (None without a verifier)
    votes: float | None  # share of the candidates that gave this answer
    strategy: str
    tokens: int  # tokens generated for this question (calculator results included)
    check: Check | None = None  # how like the run's train questions it is (None: the run keeps no data/)
    abstained: bool = False  # the verifier's value was below --min-value: `answer` is None

    def as_json(self) -> str:
        c = self.check
        return json.dumps({"question": self.question, "answer": self.answer, "solution": self.solution,
                           "value": self.value, "votes": self.votes, "strategy": self.strategy,
                           "tokens": self.tokens, "abstained": self.abstained,
                           "unlike_training": None if c is None else c.unlike_training,
                           "unseen_share": None if c is None else c.unseen_share,
                           "unseen_words": None if c is None else c.unseen_words})

    def as_text(self) -> str:
        """For a terminal: control characters escaped and special tokens (`<|...|>`) left out (--json keeps all)."""
        value = "-" if self.value is None else f"{self.value:.3f}"
        votes = "-" if self.votes is None else f"{self.votes:.0%}"
        warn = ""
        if self.check is not None and self.check.unlike_training:
            shown = ", ".join(self.check.unseen_words[:8]) + (" ..." if len(self.check.unseen_words) > 8 else "")
            warn = (f"!! unlike the run's training problems: {self.check.unseen_share:.0%} of the question's words "
                    f"never appear in its train questions ({terminal_safe(shown)}); the answer and the verifier "
                    "value mean nothing here\n")
        said = "none (abstained: the verifier's value is below --min-value)" if self.abstained else \
            terminal_safe(str(self.answer))
        return (f"Q: {terminal_safe(self.question)}\n{terminal_safe(self.solution)}\n"
                f"=> answer {said}   verifier value {value}   votes {votes}   "
                f"({self.strategy}, {self.tokens} tokens)\n{warn}")


_SPECIAL = re.compile(r"<\|[^|<>\s]{1,40}\|>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Text a terminal shows as it is: special tokens removed, control characters (ESC, NUL ...) as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", _SPECIAL.sub("", text))


def question_key(question: str) -> str:
    return "q:" + hashlib.blake2b(question.encode(), digest_size=8).hexdigest()


MAX_SAMPLES = 10_000


class Solver:
    """A run's generator (sampler) and verifier, loaded once."""

    def __init__(self, run_dir: str | Path, *, strategy: str = "best-of-n", n: int | None = None, k: int | None = None,
                 beams: int | None = None, threads: int = 0):
        from gsmv.config import load_config, with_run_seed
        from gsmv.runtime import setup_threads

        if strategy not in STRATEGIES:
            raise GsmvError(f"solve: strategy '{strategy}': valid strategies are {', '.join(STRATEGIES)}")
        paths = RunPaths(run_dir)
        if not paths.config.is_file():
            raise GsmvError(f"{paths.root}: not a gsmv run folder (no config.yaml)")
        # The seeds the run's own stages used (the run seed mixed in), so solve samples as the run did.
        self.cfg = cfg = with_run_seed(load_config(paths.config, [f"threads={threads}"] if threads else None))
        setup_threads(cfg)
        self.strategy = strategy
        self.n = n if n is not None else cfg.sample.n_test
        self.k = k if k is not None else max(1, self.n // 4)
        self.beams = beams if beams is not None else max(cfg.search.beams)
        if self.n < 1 or self.k < 1 or self.beams < 1:
            raise GsmvError("solve: --n, --k and --beams must be >= 1")
        if self.n > MAX_SAMPLES or self.beams > MAX_SAMPLES:
            raise GsmvError(f"solve: --n/--beams at most {MAX_SAMPLES:,} per question (every sample is held in "
                            "memory until the question is answered)")
        if self.k > self.n:
            raise GsmvError(f"solve: --k {self.k} is more than --n {self.n} (the top k of N samples vote)")
        from gsmv.pipeline import read_lock

        with read_lock(paths.root):  # a run writing these models makes this a one-line error, not a half-read
            self._load(paths, cfg, strategy)
        self.familiarity = Familiarity.of_run(paths.root, cfg)

    def _load(self, paths: RunPaths, cfg: Any, strategy: str) -> None:
        if not (paths.generator_final / "config.json").is_file():
            raise GsmvError(f"{paths.generator_final}: no fine-tuned generator in this run folder (run finetune first)")
        self.needs_verifier = strategy != "vote"
        have_verifier = (paths.verifier_final / "config.json").is_file()
        if self.needs_verifier and not have_verifier:
            raise GsmvError(f"{paths.verifier_final}: no trained verifier in this run folder (run train-verifier "
                            f"first, or use --strategy vote)")
        t0 = time.perf_counter()
        from gsmv.models.verifier import input_limit, load_verifier, max_positions, pad_id_of
        from gsmv.runtime import pick_device, pick_dtype
        from gsmv.sample import make_sampler
        from gsmv.sampling.base import SamplingParams
        from gsmv.search import ValueFn, verifier_value_fn

        s = cfg.sample
        if strategy == "search":
            from gsmv.search import step_sampler

            self.sampler = step_sampler(cfg, paths.generator_final)
        else:
            params = SamplingParams(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                    calculator=s.calculator)
            self.sampler = make_sampler(cfg, paths.generator_final, params)
        self.tok = self.sampler.tokenizer  # type: ignore[attr-defined]
        self.verifier = None
        self.value_fn: ValueFn | None = None
        self.value_limit = cfg.verifier.max_len
        if have_verifier:
            device = pick_device(cfg)
            self.verifier, vtok = load_verifier(paths.verifier_final, dtype=pick_dtype(cfg, device), device=device)
            self.value_limit = input_limit(self.verifier.lm, cfg.verifier.max_len)
            self.value_fn = verifier_value_fn(self.verifier, batch_size=cfg.score.batch_size, pad_id=pad_id_of(vtok),
                                              max_len=self.value_limit, generator_tokenizer=self.tok,
                                              aggregate=cfg.score.aggregate)
        model = getattr(self.sampler, "model", None)
        self.context = max_positions(model) if model is not None else None
        self.load_seconds = time.perf_counter() - t0

    # ---------------------------------------------------------------- helpers

    def _prompt(self, i: int, question: str) -> tuple[int, ...]:
        from gsmv.data.gsm8k import format_prompt
        from gsmv.models.tokenizer import encode_prompt

        if not question.strip():
            raise GsmvError(f"question {i + 1}: empty question")
        ids = tuple(encode_prompt(self.tok, format_prompt(question)))
        room = self.cfg.sample.max_new_tokens
        if self.context is not None and len(ids) + room > self.context:
            raise GsmvError(f"question {i + 1}: {len(ids)} tokens; with {room} tokens of solution that exceeds "
                            f"the model's context of {self.context} tokens")
        if len(ids) + room > self.value_limit and self.verifier is not None:
            raise GsmvError(f"question {i + 1}: {len(ids)} tokens; with {room} tokens of solution the verifier "
                            f"(max_len {self.value_limit}) would not read the whole question")
        return ids

    # ---------------------------------------------------------------- solving

    def solve(self, questions: list[str]) -> list[Answer]:
        answers = self._answers(questions)
        if self.familiarity is not None:
            for a in answers:
                a.check = self.familiarity.check(a.question)
        return answers

    def _answers(self, questions: list[str]) -> list[Answer]:
        prompts = [self._prompt(i, q) for i, q in enumerate(questions)]
        if self.strategy == "search":
            return self._search(questions, prompts)
        from gsmv.models.verifier import solution_ids
        from gsmv.sampling.base import Request, request_seed

        seed = self.cfg.sample.seed
        reqs = [Request(str(i), j, p, request_seed(seed, question_key(q), j))
                for i, (q, p) in enumerate(zip(questions, prompts, strict=True)) for j in range(self.n)]
        samples: dict[int, list[Any]] = {i: [] for i in range(len(questions))}
        for smp in self.sampler.generate(reqs):
            samples[int(smp.problem_id)].append(smp)
        out = []
        for i, q in enumerate(questions):
            group = sorted(samples[i], key=lambda x: x.sample_idx)
            values: list[float] | None = None
            if self.value_fn is not None:
                eos = self.tok.eos_token_id
                values = self.value_fn([list(prompts[i]) + solution_ids(x.tokens, x.finished, eos) for x in group],
                                       [len(prompts[i])] * len(group))
            out.append(self._pick(q, group, values))
        return out

    def _pick(self, question: str, group: list[Any], values: list[float] | None) -> Answer:
        from gsmv.data.answers import normalize_answer

        answers = [normalize_answer(x.final_answer) if x.final_answer is not None else None for x in group]
        tokens = sum(x.n_tokens for x in group)
        order = (sorted(range(len(group)), key=lambda j: -values[j]) if values is not None
                 else list(range(len(group))))
        if self.strategy == "best-of-n":
            best = order[0]
            voters = list(range(len(group)))
        else:
            voters = order[:self.k] if self.strategy == "top-k" else list(range(len(group)))
            counts = Counter(answers[j] for j in voters if answers[j] is not None)
            if counts:
                top = max(counts.values())
                tied = {a for a, c in counts.items() if c == top}
                # The tied answer whose best sample the verifier values most (the first sample without one).
                best = next(j for j in order if answers[j] in tied and j in voters)
            else:
                best = order[0]
        ans = answers[best]
        share = sum(answers[j] == ans for j in voters) / len(voters) if ans is not None else 0.0
        return Answer(question=question, answer=ans, solution=group[best].text,
                      value=None if values is None else float(values[best]), votes=share,
                      strategy=self.strategy, tokens=tokens)

    def _search(self, questions: list[str], prompts: list[tuple[int, ...]]) -> list[Answer]:
        from gsmv.data.answers import normalize_answer
        from gsmv.search import search, search_params

        probs = [(question_key(q), p, None) for q, p in zip(questions, prompts, strict=True)]
        res = search(probs, self.sampler, self.value_fn, search_params(self.cfg, self.beams), self.tok,
                     self.tok.eos_token_id)
        return [Answer(question=q, answer=normalize_answer(r.final_answer) if r.final_answer is not None else None,
                       solution=r.text, value=r.value, votes=r.votes, strategy=f"search (K={self.beams})",
                       tokens=r.generated_tokens) for q, r in zip(questions, res, strict=True)]


def read_questions(args_questions: list[str], file: str | None, stdin: Any = None) -> list[str]:
    """Questions from the arguments, else a jsonl file (objects with 'question'), else stdin (one per line).

    Text that is not valid Unicode is refused here, naming the question's place, before any model loads (the
    tokenizer would fail on it with a traceback)."""
    if args_questions:
        return [valid_text(q, f"question {i + 1} (argument)") for i, q in enumerate(args_questions)]
    if file:
        out = []
        for _, where, rec in iter_jsonl(file):
            if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
                raise GsmvError(f"{where}: expected a JSON object with a 'question' string")
            out.append(valid_text(rec["question"], f"{where} ('question')"))
        if not out:
            raise GsmvError(f"{file}: no questions")
        return out
    stdin = stdin if stdin is not None else sys.stdin
    if stdin is None or stdin.isatty():  # None: stdin closed (`<&-`)
        raise GsmvError("solve: no question given (pass questions as arguments, --file FILE, or pipe them in)")
    out = [line for line in _stdin_lines(stdin) if line.strip()]
    if not out:
        raise GsmvError("solve: no question on stdin")
    return out


def _stdin_lines(stdin: Any) -> list[str]:
    """stdin's lines, each decoded on its own (its bytes when it has them), so a bad one is named by number:
    a text stream raises UnicodeDecodeError for a whole chunk, or, under surrogateescape, lets it through."""
    buffer = getattr(stdin, "buffer", None)
    encoding = getattr(stdin, "encoding", None) or "utf-8"
    out = []
    for i, raw in enumerate(buffer if buffer is not None else stdin):
        where = f"stdin line {i + 1}"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise GsmvError(f"{where}: not valid {encoding.upper()} text (byte {e.start + 1}: "
                                f"{raw[e.start:e.start + 1]!r})") from None
        out.append(valid_text(raw.rstrip("\r\n"), where))
    return out


def valid_text(text: str, where: str) -> str:
    """`text` when it is valid Unicode; a lone surrogate (an undecodable byte passed on by argv's or stdin's
    surrogateescape, or a \\udcff escape in JSON) is one line naming where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise GsmvError(f"{where}: not valid UTF-8 text (character {e.start + 1} is {text[e.start]!r}: an "
                        "undecodable byte or a lone surrogate)") from None
    return text


def main(args: Any) -> int:
    questions = read_questions(args.questions, args.file)
    for i, q in enumerate(questions):  # before loading anything
        if not q.strip():
            raise GsmvError(f"question {i + 1}: empty question")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a command's output: answers on stdout, one line of timing on stderr
    min_value = getattr(args, "min_value", None)
    if min_value is not None and args.strategy == "vote":
        raise GsmvError("solve: --min-value reads the verifier's value; --strategy vote uses no verifier")
    solver = Solver(args.run, strategy=args.strategy, n=args.n, k=args.k, beams=args.beams, threads=args.threads)
    t0 = time.perf_counter()
    answers = abstain_below(solver.solve(questions), min_value)
    secs = time.perf_counter() - t0
    # After solving: a question refused as bad input gets its one error line and nothing else.
    print(purpose(args.run, solver.familiarity), file=sys.stderr)
    for a in answers:
        print(a.as_json() if args.json else a.as_text(), flush=True)
    print(f"gsmv solve: {len(questions)} question(s) in {secs:.1f} s ({secs / len(questions):.2f} s each) after "
          f"{solver.load_seconds:.1f} s loading", file=sys.stderr)
    return 0



def abstain_below(answers: list[Answer], min_value: float | None) -> list[Answer]:
    """Answers whose verifier value is below min_value become abstentions (answer None; the solution is kept so a
    reader sees what was not trusted)."""
    if min_value is None:
        return answers
    for a in answers:
        if a.value is not None and a.value < min_value:
            a.answer, a.abstained = None, True
    return answers


def purpose(run: str, fam: Familiarity | None) -> str:
    """What the run's models are for, said before their answers."""
    if fam is None:
        return (f"gsmv solve: {run} answers questions like its training problems only; it keeps no copy of them "
                "(no data/ folder), so no answer is checked against them")
    limit = "any word they never use" if fam.threshold == 0 else \
        f"more than {fam.threshold:.0%} of the words new to them, as no held-out problem had"
    return (f"gsmv solve: {run} answers questions like its {fam.train_questions:,} train problems "
            f"({fam.task}) only; a question with {limit} is flagged unlike them")
