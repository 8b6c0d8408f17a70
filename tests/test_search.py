"""Value-guided step-level search (gsmv.search): what it keeps, what it picks, what it counts."""

from __future__ import annotations

import pytest
import torch

from gsmv.errors import GsmvError
from gsmv.sampling.base import Request, Sample, SamplingParams
from gsmv.search import SearchParams, search


class LineTokenizer:
    """Token i decodes to VOCAB[i]; enough of a tokenizer for search's decode calls."""

    VOCAB = ["<eos>", "P\n", "a=1\n", "a=2\n", "b=3\n", "b=4\n", "#### 1", "#### 2", "#### 3", "x", "\n"]

    def decode(self, ids, **kw):
        return "".join(self.VOCAB[i] for i in ids)


EOS = 0
T = {s: i for i, s in enumerate(LineTokenizer.VOCAB)}


class TreeSampler:
    """A step-mode sampler over a fixed tree of lines: after a prefix, the line drawn is options[seed % len],
    each line followed by EOS when it is an answer. Records every request and every token it appends."""

    def __init__(self, tree: dict[tuple[int, ...], list[list[int]]], prompt_len: int = 1):
        self.params = SamplingParams(temperature=0.7, max_new_tokens=8, stop_at_newline=True)
        self.tree = tree
        self.prompt_len = prompt_len
        self.requests: list[Request] = []
        self.appended = 0

    def generate(self, requests):
        for r in requests:
            self.requests.append(r)
            prefix = tuple(r.prompt_ids[self.prompt_len:])
            options = self.tree[prefix]
            line = options[r.seed % len(options)]
            finished = LineTokenizer.VOCAB[line[-1]].startswith("####")
            self.appended += len(line)
            yield Sample(r.problem_id, r.sample_idx, "", list(line), None, None, 0, [False] * len(line), finished)


TREE = {
    (): [[T["a=1\n"]], [T["a=2\n"]]],
    (T["a=1\n"],): [[T["#### 1"]]],
    (T["a=2\n"],): [[T["b=3\n"]], [T["b=4\n"]]],
    (T["a=2\n"], T["b=3\n"]): [[T["#### 3"]]],
    (T["a=2\n"], T["b=4\n"]): [[T["#### 2"]]],
}


def scripted_value(scored: list[list[int]]):
    """Prefers any prefix through b=3, then a=1; records what it read."""

    def fn(seqs, starts):
        assert starts == [1] * len(seqs)  # every solution starts after the one-token prompt
        scored.extend(seqs)
        return [0.9 if T["b=3\n"] in s else 0.5 if T["a=1\n"] in s else 0.2 for s in seqs]

    return fn


def run(params, problems=(("q", (T["P\n"],), "3"),)):
    sampler, scored = TreeSampler(TREE), []
    out = search(list(problems), sampler, scripted_value(scored), params, LineTokenizer(), EOS)
    return out, sampler, scored


def test_search_picks_the_beam_the_verifier_prefers_and_counts_tokens_exactly():
    [res], sampler, scored = run(SearchParams(beams=2, expansions=4, max_steps=5, seed=3))
    assert res.text == "a=2\nb=3\n#### 3" and res.final_answer == "3" and res.is_correct and res.finished
    assert res.value == pytest.approx(0.9)
    # Every token the sampler appended, and every token the verifier read, exactly.
    assert res.generated_tokens == sampler.appended
    assert res.scored_tokens == sum(len(s) for s in scored)
    # Step 0 draws K·M = 8 first lines from the empty solution; later steps M per open beam.
    assert sum(len(r.prompt_ids) == 1 for r in sampler.requests) == 8
    # Distinct prefixes are scored once: at most 2 distinct first lines, then their continuations.
    assert len(scored) == len({tuple(s) for s in scored})
    # Finished beams are scored with EOS appended, open prefixes without.
    assert all((s[-1] == EOS) == LineTokenizer.VOCAB[s[-2 if s[-1] == EOS else -1]].startswith("####")
               for s in scored)


def test_one_beam_keeps_only_the_best_prefix_at_each_step():
    # K=1: after step 0 only the best first line survives (a=1 scores 0.5 > a=2's 0.2), so the search never
    # reaches b=3 and answers 1: greedy in the verifier's value, not in the final answer.
    [res], _, _ = run(SearchParams(beams=1, expansions=4, max_steps=5))
    assert res.text == "a=1\n#### 1" and res.is_correct is False and res.votes == 1.0


def test_vote_pick_takes_the_most_common_answer_of_the_final_beams():
    # With 3 beams all three answers survive: 3 (0.9), 1 (0.5), 2 (0.2); a vote over distinct answers is a
    # 1-1-1 tie, broken by value.
    [res], _, _ = run(SearchParams(beams=3, expansions=4, pick="vote"))
    assert res.final_answer == "3" and res.votes == pytest.approx(1 / 3)
    # Two lower-valued beams that agree outvote the best one: b=4 and a new "x" line both lead to 2.
    tree = {**TREE, (T["a=2\n"],): [[T["b=3\n"]], [T["b=4\n"]], [T["x"], T["\n"]]],
            (T["a=2\n"], T["x"], T["\n"]): [[T["#### 2"]]]}

    def value(seqs, starts):
        return [0.9 if T["b=3\n"] in q else 0.6 if T["b=4\n"] in q or T["x"] in q else 0.5 if T["a=1\n"] in q
                else 0.2 for q in seqs]

    for pick, want, share in (("vote", "2", 2 / 3), ("value", "3", 1 / 3)):
        [res] = search([("q", (T["P\n"],), "3")], TreeSampler(tree), value,
                       SearchParams(beams=3, expansions=8, pick=pick, seed=1), LineTokenizer(), EOS)
        assert (res.final_answer, res.votes) == (want, pytest.approx(share)), pick


def test_token_budget_cuts_the_line_that_crosses_it():
    # A 1-token budget: the first line (1 token) ends every beam at once; with budget 0 nothing fits.
    long_tree = {(): [[T["x"], T["x"], T["\n"]]], (T["x"], T["x"], T["\n"]): [[T["#### 1"]]]}
    sampler = TreeSampler(long_tree)
    [res] = search([("q", (T["P\n"],), "1")], sampler, scripted_value([]),
                   SearchParams(beams=2, expansions=1, max_new_tokens=2), LineTokenizer(), EOS)
    assert res.tokens == [T["x"], T["x"]] and not res.finished and res.steps == 1
    assert res.generated_tokens == 3 * 2  # the cost counts the cut-off newline of both samples


def test_max_steps_and_token_budget_end_open_beams():
    [res], _, _ = run(SearchParams(beams=2, expansions=2, max_steps=1))
    assert res.steps == 1 and not res.finished and res.final_answer is None
    [res], _, _ = run(SearchParams(beams=2, expansions=2, max_steps=9, max_new_tokens=1))
    assert res.steps == 1 and len(res.tokens) == 1


def test_a_problem_searches_the_same_alone_or_in_a_batch():
    params = SearchParams(beams=2, expansions=2, seed=5)
    probs = [(f"q{i}", (T["P\n"],), "3") for i in range(4)]
    together, _, _ = run(params, probs)
    alone = [run(params, [p])[0][0] for p in probs]
    assert [r.as_row() for r in together] == [r.as_row() for r in alone]
    # and seeds differ between problems: not every problem drew the same lines
    assert len({r.text for r in together}) > 1


def test_search_needs_a_step_sampler_and_valid_params():
    sampler = TreeSampler(TREE)
    sampler.params = SamplingParams(stop_at_newline=False)
    with pytest.raises(GsmvError, match="stop at newlines"):
        search([("q", (1,), "3")], sampler, scripted_value([]), SearchParams(), LineTokenizer(), EOS)
    with pytest.raises(GsmvError, match="beams must be >= 1"):
        SearchParams(beams=0)
    with pytest.raises(GsmvError, match="valid picks are value, vote"):
        SearchParams(pick="best")


def test_search_with_the_hf_sampler_on_a_tiny_model_is_deterministic(tiny_llama_dir):
    # The real sampler in step mode: every kept solution is a concatenation of whole lines, and the same
    # seed gives the same search.
    from gsmv.models.loading import load_model_and_tokenizer
    from gsmv.sampling.hf import HFSampler

    model, tok = load_model_and_tokenizer(tiny_llama_dir, dtype=torch.float32, device="cpu")
    params = SamplingParams(temperature=1.0, max_new_tokens=6, stop_at_newline=True)
    probs = [(f"q{i}", tuple(tok.encode(f"Question {i}?\n", add_special_tokens=False)), "1") for i in range(3)]

    def value(seqs, starts):
        assert all(tuple(s[:st]) in {p for _, p, _ in probs} for s, st in zip(seqs, starts, strict=True))
        return [(sum(s) % 97) / 97 for s in seqs]

    # 3 steps of up to 6 tokens could write 18; the solution budget of 10 cuts the line that crosses it.
    sp = SearchParams(beams=2, expansions=2, max_steps=3, max_new_tokens=10)
    a = search(probs, HFSampler(model, tok, params, batch_size=4), value, sp, tok, tok.eos_token_id)
    b = search(probs, HFSampler(model, tok, params, batch_size=3), value, sp, tok, tok.eos_token_id)
    assert [r.as_row() for r in a] == [r.as_row() for r in b]
    for r in a:
        assert r.generated_tokens >= len(r.tokens) and r.steps <= 3 and len(r.tokens) <= 10
        assert r.text == tok.decode(r.tokens)
    assert max(len(r.tokens) for r in a) == 10  # the budget bound, not the steps


def test_a_verifier_that_reads_text_values_the_generators_sequences_as_their_text(tiny_llama_dir, tiny_gpt2_dir):
    # search and solve hand the verifier the generator's ids; a verifier of another vocabulary values the same
    # text in its own ids (prompt, solution, and EOS only when the generator's EOS ended the solution).
    from transformers import AutoTokenizer

    from gsmv.models.tokenizer import encode_prompt, encode_solution
    from gsmv.models.verifier import build_verifier, pad_id_of, score_sequences
    from gsmv.search import verifier_value_fn

    gtok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ver, vtok = build_verifier(tiny_gpt2_dir)
    ver.reads = "text"
    with torch.no_grad():
        ver.gain.fill_(0.7)
    question, solution = "Tom has 4 pens and buys 5 more. How many?\n", "4+5 = <<4+5=9>>9 pens.\n#### 9"
    prompt = encode_prompt(gtok, question)
    sol = gtok(solution, add_special_tokens=False)["input_ids"]
    seqs = [prompt + sol + [gtok.eos_token_id], prompt + sol[:5]]
    got = verifier_value_fn(ver, batch_size=2, pad_id=pad_id_of(vtok), generator_tokenizer=gtok)(
        seqs, [len(prompt)] * 2)
    vprompt = encode_prompt(vtok, question)
    want_seqs = [vprompt + encode_solution(vtok, solution, eos=True),
                 vprompt + encode_solution(vtok, gtok.decode(sol[:5]), eos=False)]
    want = [v for v, _ in score_sequences(ver, want_seqs, [len(vprompt)] * 2, batch_size=2, pad_id=pad_id_of(vtok))]
    assert got == pytest.approx(want, abs=1e-6)
    with pytest.raises(GsmvError, match="needs the generator's tokenizer"):
        verifier_value_fn(ver, batch_size=2, pad_id=pad_id_of(vtok))
