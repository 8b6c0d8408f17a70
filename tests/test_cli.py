"""The command line: help, one-line errors with exit code 2, and nothing written on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gsmv import cli

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_stage_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "finetune", "sample", "label", "train-verifier", "score", "evaluate", "report"):
        assert command in out


def test_every_command_maps_to_real_pipeline_stages():
    from gsmv.pipeline import STAGE_NAMES

    for command, (stages, _) in cli.COMMANDS.items():
        assert set(stages) <= set(STAGE_NAMES), command
    assert set(cli.SAMPLE_STAGE.values()) <= set(STAGE_NAMES)


def test_bad_override_is_one_line_and_exit_2(tmp_path, capsys):
    rc = cli.main(["run", "--config", "smoke", f"out_dir={tmp_path}", "sample.n_tset=3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("gsmv: error: ") and "sample.n_tset" in err and "n_test" in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"question": "q", "answer": "no final line"}', "train.jsonl:2: field 'answer' has no '####'"),
        ('{"question": "q", "answer": "x\\n#### 3"', "train.jsonl:2: "),
        ('{"answer": "x\\n#### 3"}', "train.jsonl:2: "),
    ],
)
def test_bad_data_is_one_line_names_file_and_line_and_writes_nothing(tmp_path, capsys, line, expected):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "a\n#### 1"}) + "\n" + line + "\n")
    (data / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "a\n#### 1"}) + "\n")
    out = tmp_path / "runs"
    rc = cli.main(["run", "--config", "smoke", f"out_dir={out}", f"data.dir={data}", "data.val_size=0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert expected in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    rc = cli.main(["score", "--config", "smoke", f"out_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "needs 'train-verifier' first" in err


def test_reference_file_through_the_cli(tmp_path):
    ref = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
    if not ref.exists():
        pytest.skip("the paper's example_model_solutions.jsonl is not beside the checkout")
    proc = subprocess.run([sys.executable, "-m", "gsmv", "evaluate", "--reference", str(ref)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for number in ("21.7", "39.0", "34.7", "56.3"):
        assert number in proc.stdout


@pytest.mark.parametrize("given", [[], ["no/such/example_model_solutions.jsonl"]])
def test_reference_rows_from_a_fresh_clone_come_from_the_shipped_flags(capsys, given):
    # Issue 46: no ../shared beside a fresh clone. The paper's rows still print, with one line on stderr naming
    # where the full file comes from.
    assert cli.main(["evaluate", "--reference", *given]) == 0
    out, err = capsys.readouterr()
    for number in ("21.7%  [19.3, 23.8]", "39.0%  [36.4, 41.6]", "34.7%  [32.2, 37.2]", "56.3%  [53.6, 58.8]"):
        assert number in out
    assert "paper_reference.json" in out
    assert len(err.splitlines()) == 1 and "github.com/openai/grade-school-math" in err
    assert ("not found" in err) == bool(given)


@pytest.mark.parametrize("command", [["presets"], ["config", "--config", "smoke"]])
def test_a_closed_stdout_pipe_exits_quietly_as_unix_tools_do(command):
    """`gsmv presets | head -1`: the reader is gone before gsmv writes (its end of the pipe is closed here before
    gsmv has even started up). Exit status 141, as a death by SIGPIPE gives, and nothing on stderr (issue 47:
    'gsmv: error: Broken pipe' and 2). `config` prints less than stdout's buffer: it fails at the final flush."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "gsmv", *command], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")
