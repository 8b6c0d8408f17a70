"""`gsmv solve` on a trained smoke run: text and JSON output, every strategy, and bad input as one-line errors."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from gsmv import cli
from gsmv.errors import GsmvError
from gsmv.solve import Solver, read_questions

pytestmark = pytest.mark.slow

Q = "Ana has 3 boxes with 4 pens in each. How many pens does she have?"


def test_solve_json_and_text_output(smoke_synth_run, capsys):
    assert cli.main(["solve", "--run", str(smoke_synth_run), "--n", "4", "--json", Q, "Bo has 2 cats."]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [o["question"] for o in out] == [Q, "Bo has 2 cats."]
    for o in out:
        assert set(o) == {"question", "answer", "solution", "value", "votes", "strategy", "tokens", "abstained",
                          "unlike_training", "unseen_share", "unseen_words"}
        assert o["abstained"] is False
        assert 0.0 <= o["value"] <= 1.0 and 0.0 <= o["votes"] <= 1.0 and o["tokens"] > 0
        assert o["strategy"] == "best-of-n"
    assert cli.main(["solve", "--run", str(smoke_synth_run), "--n", "4", Q]) == 0
    text = capsys.readouterr()
    assert text.out.startswith(f"Q: {Q}\n") and "=> answer" in text.out and "verifier value" in text.out
    assert "loading" in text.err  # timings go to stderr


def test_questions_unlike_the_training_problems_are_flagged(smoke_synth_run, capsys):
    first_test = json.loads((smoke_synth_run / "data" / "test.jsonl").read_text().splitlines()[0])["question"]
    everyday = "What is the capital of France?"
    assert cli.main(["solve", "--run", str(smoke_synth_run), "--n", "2", "--json", first_test, everyday, Q]) == 0
    out = capsys.readouterr()
    ok, far, near = (json.loads(x) for x in out.out.splitlines())
    assert (ok["unlike_training"], ok["unseen_share"], ok["unseen_words"]) == (False, 0.0, [])
    assert (far["unlike_training"], far["unseen_share"], far["unseen_words"]) == (True, 0.3333, ["capital", "france"])
    assert near["unlike_training"] and near["unseen_words"] == ["ana", "pens", "she"]  # the synth task has no pens
    # What the run is for is said before the answers.
    assert f"{smoke_synth_run} answers questions like its 220 train problems (synthetic (data.synth)) only" in out.err
    assert cli.main(["solve", "--run", str(smoke_synth_run), "--n", "2", first_test, everyday]) == 0
    text = capsys.readouterr().out
    assert text.count("!! unlike the run's training problems") == 1
    assert "33% of the question's words never appear in its train questions (capital, france)" in text


def test_strategies_pick_as_documented(smoke_synth_run):
    best = Solver(smoke_synth_run, strategy="best-of-n", n=6, threads=2)
    [a] = best.solve([Q])
    again = best.solve([Q])[0]
    assert a == again  # seeded by the question: the same answer every call
    # best-of-n shows the highest-valued of the same 6 samples that vote and top-k see.
    vote = Solver(smoke_synth_run, strategy="vote", n=6, threads=2)
    [v] = vote.solve([Q])
    assert v.tokens == a.tokens  # the same samples (same seeds)
    assert v.votes >= a.votes  # vote takes the most common answer of those samples
    topk = Solver(smoke_synth_run, strategy="top-k", n=6, k=1, threads=2)
    [t] = topk.solve([Q])
    assert t.answer == a.answer and t.value == a.value
    s = Solver(smoke_synth_run, strategy="search", beams=2, threads=2)
    [r] = s.solve([Q])
    assert r.strategy == "search (K=2)" and r.tokens > 0 and 0.0 <= r.value <= 1.0


def test_min_value_abstains_below_the_threshold_and_says_so(smoke_synth_run, capsys):
    args = ["solve", "--run", str(smoke_synth_run), "--n", "4", "--json", Q]
    assert cli.main(args) == 0
    value = json.loads(capsys.readouterr().out)["value"]
    assert cli.main(args + ["--min-value", str(value + 1e-3)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["abstained"] is True and out["answer"] is None and out["value"] == value
    assert cli.main(args + ["--min-value", str(value - 1e-3)]) == 0
    assert json.loads(capsys.readouterr().out)["abstained"] is False
    assert cli.main(["solve", "--run", str(smoke_synth_run), "--n", "4", "--min-value", str(value + 1e-3), Q]) == 0
    assert "answer none (abstained" in capsys.readouterr().out
    assert cli.main(["solve", "--run", str(smoke_synth_run), "--strategy", "vote", "--min-value", "0.5", Q]) == 2
    assert "--min-value reads the verifier's value" in capsys.readouterr().err


def test_a_step_aggregate_ranks_samples_by_it(smoke_synth_run, tmp_path):
    """score.aggregate=min in the run's config: solve ranks by the minimum over step-end and final values,
    which is never above the final value alone."""
    import yaml

    run = tmp_path / "run"
    shutil.copytree(smoke_synth_run, run)
    last = Solver(run, strategy="best-of-n", n=6, threads=2).solve([Q])[0]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.setdefault("score", {})["aggregate"] = "min"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    agg = Solver(run, strategy="best-of-n", n=6, threads=2).solve([Q])[0]
    assert agg.value <= last.value + 1e-6


def test_bad_input_gives_one_line_errors(smoke_synth_run, tmp_path, capsys):
    def err(*argv):
        assert cli.main(["solve", *argv]) == 2
        msg = capsys.readouterr().err.strip()
        assert len(msg.splitlines()) == 1 and msg.startswith("gsmv: error:")
        return msg

    assert "empty question" in err("--run", str(smoke_synth_run), "  ")
    assert "context" in err("--run", str(smoke_synth_run), "seven " * 3000)
    assert "not a gsmv run folder" in err("--run", str(tmp_path / "nowhere"), Q)
    no_verifier = tmp_path / "run"
    shutil.copytree(smoke_synth_run, no_verifier)
    shutil.rmtree(no_verifier / "verifier" / "final")
    assert "no trained verifier" in err("--run", str(no_verifier), Q)
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "ok?"}\n{"q": 1}\n')
    assert f"{bad}:2" in err("--run", str(smoke_synth_run), "--file", str(bad))


def test_questions_from_stdin_and_file(tmp_path):
    assert read_questions([], None, io.StringIO("a?\n\nb?\n")) == ["a?", "b?"]
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "c?"}\n')
    assert read_questions([], str(f)) == ["c?"]
    with pytest.raises(GsmvError, match="no question on stdin"):
        read_questions([], None, io.StringIO("\n"))


def test_closed_stdin_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr("sys.stdin", None)  # what `gsmv solve <&-` gives Python
    with pytest.raises(GsmvError, match="no question given"):
        read_questions([], None)


def test_k_above_n_and_negative_threads_are_refused(smoke_synth_run):
    with pytest.raises(GsmvError, match="--k 10 is more than --n 4"):
        Solver(smoke_synth_run, strategy="top-k", n=4, k=10)
    with pytest.raises(GsmvError, match="at most 10,000 per question"):
        Solver(smoke_synth_run, n=100000)
    with pytest.raises(GsmvError, match="'threads' is -3"):
        Solver(smoke_synth_run, threads=-3)


@pytest.mark.parametrize("size", [0, 50])
def test_a_damaged_value_head_is_a_one_line_error(smoke_synth_run, tmp_path, size):
    run = tmp_path / "run"
    shutil.copytree(smoke_synth_run, run)
    head = run / "verifier" / "final" / "value_head.safetensors"
    head.write_bytes(head.read_bytes()[:size])
    with pytest.raises(GsmvError, match="value_head.safetensors: not a readable safetensors file"):
        Solver(run)


def test_solve_refuses_a_run_folder_that_a_run_holds(smoke_synth_run, tmp_path):
    from gsmv.pipeline import RunLock

    run = tmp_path / "run"
    shutil.copytree(smoke_synth_run, run)
    lock = RunLock(run)
    try:
        with pytest.raises(GsmvError, match=r"in use by a gsmv run \(pid \d+"):
            Solver(run)
    finally:
        lock.release()
    assert Solver(run, n=2).n == 2  # free again


def test_text_output_escapes_control_characters_and_drops_special_tokens():
    from gsmv.solve import Answer, terminal_safe

    assert terminal_safe("a\x1b[31mb\x00c<|value|>d<|pad|>\n#### 3\t") == "a\\x1b[31mb\\x00cd\n#### 3\t"
    a = Answer(question="q\x1b?", answer="3", solution="x<|endoftext|>\x07", value=0.5, votes=1.0,
               strategy="best-of-n", tokens=4)
    text = a.as_text()
    assert "\x1b" not in text and "\x07" not in text and "<|" not in text and "\\x1b" in text
    assert json.loads(a.as_json())["solution"] == "x<|endoftext|>\x07"  # --json keeps everything


@pytest.mark.parametrize("route", ["argument", "file", "stdin-bytes", "stdin-text"])
def test_invalid_utf8_in_a_question_is_one_line_naming_it_before_any_model_loads(tmp_path, monkeypatch, capsys,
                                                                                 route):
    """Issue 47: a traceback from the tokenizer after the models had loaded. The run folder here holds no
    models at all: the question's error must come first."""
    from gsmv import cli

    args = ["solve", "--run", str(tmp_path / "no-run")]
    if route == "argument":  # what Python's argv gives for an invalid byte (surrogateescape)
        args += ["How many pens?", "Tom has 4 \udcff pens."]
        where = "question 2 (argument)"
    elif route == "file":  # a JSON escape of a lone surrogate (a raw invalid byte was already refused)
        f = tmp_path / "q.jsonl"
        f.write_text('{"question": "How many pens?"}\n\n{"question": "Tom has 4 \\udcff pens."}\n')
        args += ["--file", str(f)]
        where = f"{f}:3 ('question')"
    else:
        data = b"How many pens?\nTom has 4 \xff pens.\n"
        stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
        if route == "stdin-text":  # a stream with no bytes under it, under surrogateescape as in a C locale
            stdin = io.StringIO(data.decode("utf-8", errors="surrogateescape"))
        stdin.isatty = lambda: False
        monkeypatch.setattr("sys.stdin", stdin)
        where = "stdin line 2"
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gsmv: error: {where}: not valid") and "UTF-8" in err[0], err
