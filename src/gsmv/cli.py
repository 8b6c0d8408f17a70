"""`gsmv <command>`: each stage as a command, and `gsmv run` for the whole pipeline.

Every command takes `--config` (a YAML path or a preset name from configs/) and dotted
overrides such as `sample.n_test=8`. Stage commands go through the pipeline so that
manifest.json stays the single record of what was done with which config; the cheap
ones (label, evaluate, report) run again even when done.
"""

from __future__ import annotations

import argparse
import os
import sys

from gsmv.artifacts import os_error_message
from gsmv.errors import GsmvError

DEFAULT_PRESET = "synth"

# command → (pipeline stage names, help)
COMMANDS: dict[str, tuple[list[str], str]] = {
    "finetune": (["finetune"], "fine-tune the generator on train solutions"),
    "sample": ([], "sample solutions for one split (--split train|val|test|test_greedy)"),
    "label": (["label"], "grade samples by final answer; report coverage"),
    "train-verifier": (["train-verifier"], "train the verifier on labelled train samples"),
    "score": (["score"], "verifier values for every test sample"),
    "score-val": (["score-val"], "verifier values for every val sample (thresholds of the step-level evaluation)"),
    "search": (["search"], "value-guided step-level search on test problems (sets search.enabled=true)"),
    "evaluate": (["evaluate"], "test@1, pass@k, best-of-N and voting with 95%% CIs → results.json"),
    "report": (["report"], "plots, report.md and the report.html viewer"),
}
SAMPLE_STAGE = {"train": "sample-train", "val": "sample-val", "test": "sample-test", "test_greedy": "sample-test-greedy"}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=DEFAULT_PRESET,
                   help=f"YAML file or preset name in configs/ (default: {DEFAULT_PRESET})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. sample.n_test=8")


def build_parser() -> argparse.ArgumentParser:
    from gsmv.stages import STAGE_NAMES

    parser = argparse.ArgumentParser(prog="gsmv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("run", help=f"the whole pipeline in one run folder (resumes; default preset: {DEFAULT_PRESET})")
    _add_common(p)
    p.add_argument("--from", dest="start", choices=STAGE_NAMES, help="first stage to run")
    p.add_argument("--until", choices=STAGE_NAMES, help="last stage to run")
    p.add_argument("--redo", action="append", choices=STAGE_NAMES, metavar="STAGE",
                   help="delete STAGE's outputs and those of every stage downstream of it, then run them again "
                        "(repeatable)")
    p = sub.add_parser("config", help="every config key with its value and what it does (the keys key=value overrides take)")
    _add_common(p)
    sub.add_parser("presets", help="the shipped presets: what each is for, its measured time and what it needs")
    p = sub.add_parser("make-data", help="write the preset's train.jsonl and test.jsonl (GSM8K format) to a folder")
    _add_common(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write train.jsonl and test.jsonl into")
    p = sub.add_parser(
        "solve", help="answer new questions with a trained run's generator and verifier",
        description="Answer new questions with a trained run's generator and verifier. A run answers questions "
                    "like its training problems only: the default run (runs/synth, `gsmv run`) is a small model "
                    "trained from scratch on synthetic GSM-style word problems (1-4 operations on small whole "
                    "numbers) and gives any other question a number and a confident verifier value all the same. "
                    "An answer to a question whose words the run's train questions do not use is flagged "
                    "(unlike_training in --json).")
    p.add_argument("questions", nargs="*", metavar="QUESTION", help="questions (default: --file, else stdin, one per line)")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder with a generator and a verifier")
    p.add_argument("--strategy", default="best-of-n", choices=["best-of-n", "vote", "top-k", "search"])
    p.add_argument("--n", type=int, default=None, help="samples per question (default: the run's sample.n_test)")
    p.add_argument("--k", type=int, default=None, help="top-k: how many top-valued samples vote (default: N/4)")
    p.add_argument("--beams", type=int, default=None, help="search: beams kept (default: the largest of search.beams)")
    p.add_argument("--file", metavar="JSONL", help="questions from a jsonl file (objects with a 'question')")
    p.add_argument("--json", action="store_true", help="one JSON object per question")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the run's setting)")
    p.add_argument("--min-value", type=float, default=None, metavar="T",
                   help="abstain (answer null, and say so) when the verifier's value of the chosen solution is "
                        "below T; report.md's selective-answer table shows what a threshold buys on the test set")
    p = sub.add_parser("export", help="a trained verifier as a transformers classification model folder")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder with a trained verifier")
    p.add_argument("--to", required=True, choices=["seq-cls", "token-cls"],
                   help="seq-cls: AutoModelForSequenceClassification; token-cls: AutoModelForTokenClassification")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        _add_common(p)
        if name == "sample":
            p.add_argument("--split", required=True, choices=list(SAMPLE_STAGE))
        if name == "evaluate":
            p.add_argument("--reference", metavar="JSONL", nargs="?", const="",
                           help="the paper's rows from its released per-problem results file instead of a run "
                                "folder (no file, or a missing one: the copy of its flags that gsmv ships)")
    return parser


def _print_results(cfg, where: bool = False) -> None:
    """The results table; where: and the files to read next (the end of `gsmv run`'s log)."""
    from gsmv.artifacts import RunPaths, read_json
    from gsmv.formatting import format_table

    paths = RunPaths(cfg.run_dir)
    if paths.results.exists():
        print(format_table(read_json(paths.results)))
    reports = [str(p) for p in (paths.report_md, paths.report_html) if p.exists()] if where else []
    if reports:
        print(f"report: {' and '.join(reports)} (plots in {paths.plots})")


def _make_data(cfg, out: str) -> None:
    """train.jsonl (val included: the loader carves it with data.val_size/val_seed) and test.jsonl, so that
    `data.source=local data.dir=OUT` reproduces the preset's problems exactly."""
    from pathlib import Path

    from gsmv.artifacts import read_json
    from gsmv.data.tasks import record_data

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise GsmvError(f"{folder}: exists and is not a folder")
    record_data(cfg, folder)
    info = read_json(folder / "info.json")
    for split in ("train", "test"):
        print(f"{folder / (split + '.jsonl')}: {info[split]['problems']} problems")
    print(f"{folder / 'info.json'}: source and content hashes")


def _export(args) -> None:
    from pathlib import Path

    from gsmv.artifacts import RunPaths, read_json_or_none
    from gsmv.export import export

    paths = RunPaths(Path(args.run))
    if not (paths.verifier_final / "config.json").is_file():
        raise GsmvError(f"{paths.verifier_final}: no trained verifier in this run folder (run train-verifier first)")
    card = {}
    results = read_json_or_none(paths.root / "results.json")
    if isinstance(results, dict) and isinstance(results.get("metrics"), dict):  # the run's headline numbers
        card = {f"test {k}": round(m["value"], 4) for k, m in results["metrics"].items()
                if isinstance(m, dict) and isinstance(m.get("value"), int | float)}
    out = export(paths.verifier_final, args.to, args.out, card=card)
    print(f"{out}: {args.to} export of {paths.verifier_final}")


def _reader_gone() -> int:
    """The reader of stdout went away (`gsmv presets | head -1`): exit quietly, as Unix tools do, with the status
    a death by SIGPIPE gives (128 + 13; Python ignores the signal and gets EPIPE instead). What is still in
    stdout's buffer goes to /dev/null: Python's flush at exit would fail again and print "Exception ignored"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout to redirect (a test's capture): nothing to do
        pass
    return 141


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; its exit status (errors are main's to report)."""
    if args.command == "solve":
        from gsmv import solve

        return solve.main(args)
    if args.command == "export":
        _export(args)
        return 0
    if args.command == "presets":
        from gsmv.presets import describe_presets

        print(describe_presets(DEFAULT_PRESET))
        return 0
    if args.command == "evaluate" and args.reference is not None:
        from gsmv.data.paper_reference import released_file
        from gsmv.evaluate import evaluate_reference
        from gsmv.formatting import format_table

        with released_file(args.reference, lambda line: print(line, file=sys.stderr)) as (path, source):
            results = evaluate_reference(path)
        print(format_table({**results, "source": source}))
        return 0
    from gsmv import pipeline
    from gsmv.config import load_config
    from gsmv.runtime import setup_threads

    overrides = list(args.overrides) + (["search.enabled=true"] if args.command == "search" else [])
    cfg = load_config(args.config, overrides)
    setup_threads(cfg)
    if args.command == "config":
        from gsmv.config_doc import describe

        print(describe(cfg))
    elif args.command == "make-data":
        _make_data(cfg, args.out)
    elif args.command == "run":
        pipeline.run(cfg, start=args.start, until=args.until, redo=args.redo)
        _print_results(cfg, where=True)
    elif args.command == "sample":
        pipeline.run(cfg, only=[SAMPLE_STAGE[args.split]])
    else:
        pipeline.run(cfg, only=COMMANDS[args.command][0])
        if args.command == "evaluate":
            _print_results(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe fails here, in the handlers below, not in the flush at exit
        return code
    except GsmvError as e:
        print(f"gsmv: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # before OSError: a reader gone is no error to report
        return _reader_gone()
    except OSError as e:  # a file-system error (a read-only folder, a full disk ...): one line naming the path
        print(f"gsmv: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gsmv: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
