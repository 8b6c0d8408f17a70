"""Issue 11 (hardening): damaged outputs are redone, suggested fixes work, one process per run folder, refused
configs change nothing, moved folders resume, file-system errors and bad configs are one-line errors.

One tiny finished run (~10 s on 2 cores) is built once and copied into each test that needs one.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_overrides import TINY_OVERRIDES

from gsmv import cli, pipeline
from gsmv import stages as stage_list
from gsmv.config import check_for_stages, load_config
from gsmv.errors import GsmvError

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = ROOT / "tests" / "assets" / "tiny_gsm8k"
# Fewer problems and samples than the tiny preset: a whole run takes seconds. 4 problems per shard makes
# several shards per split.
OVERRIDES = [f"data.dir={TINY_DATA}", *TINY_OVERRIDES, "data.train_limit=48", "data.test_limit=8",
             "sample.n_test=2", "sample.problems_per_shard=4"]


def args(out_dir: Path, *extra: str, name: str = "t") -> list[str]:
    return ["--config", "smoke", f"out_dir={out_dir}", f"name={name}", *OVERRIDES, *extra]


def gsmv(capsys, *argv: str) -> tuple[int, str, str]:
    """cli.main(argv) → (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err.strip()


def one_line_error(err: str) -> str:
    assert err.startswith("gsmv: error: ") and len(err.splitlines()) == 1, err
    return err


def fix_flags(err: str) -> list[str]:
    """The flags of the `gsmv run ...` command an error message suggests."""
    m = re.search(r"gsmv run((?: --[a-z]+ [a-z-]+)*) \(with the same --config and overrides\)", err)
    assert m, err
    return m.group(1).split()


def stages(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def all_done(run_dir: Path) -> bool:
    return all(rec["status"] == "done" for rec in stages(run_dir).values())


def ran(out: str) -> set[str]:
    """Stages the log says ran (not skipped)."""
    return set(re.findall(r"^\[([a-z-]+)\] done in", out, re.M))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    assert cli.main(["run", *args(out)]) == 0
    assert all_done(out / "t")
    return out


@pytest.fixture
def runs(finished, tmp_path) -> Path:
    """A private copy of the finished run: out_dir with the run folder 't'."""
    out = tmp_path / "runs"
    shutil.copytree(finished, out, symlinks=True)
    return out


# ---------------------------------------------------------------- 1. outputs checked before they are trusted


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.mark.parametrize("rel, damage", [
    ("samples/test/shard-00001.parquet", "delete"),
    ("samples/train/shard-00002.parquet", "truncate"),
    ("scores/test/shard-00000.parquet", "truncate"),
    ("scores/test/shard-00001.parquet", "delete"),
    ("generator/final/model.safetensors", "delete"),
    ("generator/final/config.json", "delete"),
    ("generator/final/tokenizer_config.json", "delete"),
    ("verifier/final/model.safetensors", "truncate"),
    ("verifier/final/value_head.safetensors", "delete"),
])
def test_damaged_output_of_a_finished_stage_is_made_again(runs, capsys, rel, damage):
    path = runs / "t" / rel
    before = path.read_bytes()
    path.unlink() if damage == "delete" else truncate(path)
    rc, out, err = gsmv(capsys, "run", *args(runs))
    assert rc == 0, err
    assert "outputs incomplete" in out
    assert path.is_file()
    if path.suffix == ".parquet":
        assert pq.read_metadata(path).num_rows == pq.ParquetFile(io.BytesIO(before)).metadata.num_rows
    assert all_done(runs / "t")
    # Once repaired, nothing more to do.
    rc, out, _ = gsmv(capsys, "run", *args(runs))
    assert rc == 0 and ran(out) == set()


def test_score_shard_with_missing_rows_is_scored_again(runs, capsys):
    path = runs / "t" / "scores/test/shard-00000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # readable, one score short
    rc, out, err = gsmv(capsys, "run", *args(runs))
    assert rc == 0, err
    assert "holds" in out and pq.read_metadata(path).num_rows == table.num_rows
    assert "score" in ran(out)


def test_stage_command_after_damage_stops_with_a_fix_that_works(runs, capsys):
    (runs / "t" / "scores/test/shard-00001.parquet").unlink()
    rc, out, err = gsmv(capsys, "evaluate", *args(runs))
    assert rc == 2
    one_line_error(err)
    assert "needs 'score'" in err
    assert "[score] outputs incomplete" in out and "runs again" not in out  # what `gsmv evaluate` does not do
    flags = fix_flags(err)
    assert flags == ["--from", "score", "--until", "evaluate"]
    rc, out, err = gsmv(capsys, "run", *flags, *args(runs))
    assert rc == 0, err
    assert ran(out) == {"score", "evaluate"}
    assert (runs / "t" / "scores/test/shard-00001.parquet").is_file()
    assert {k: v["status"] for k, v in stages(runs / "t").items() if k != "report"} == \
        dict.fromkeys(stage_list.enabled_stages(load_config("smoke", OVERRIDES))[:-1], "done")
    # The report that read the old scores is not done any more: the next run makes it again.
    rc, out, err = gsmv(capsys, "run", *args(runs))
    assert rc == 0 and ran(out) == {"report"} and all_done(runs / "t")


# ---------------------------------------------------------------- 2. --redo, and fixes that work as written


def test_redo_deletes_the_stage_and_downstream_and_runs_them_again(runs, capsys):
    run_dir = runs / "t"
    marker = run_dir / "scores/test/marker"
    marker.write_text("left by an earlier run")
    rc, out, err = gsmv(capsys, "run", "--redo", "score", *args(runs))
    assert rc == 0, err
    assert ran(out) == {"score", "evaluate", "report"}
    assert not marker.exists() and all_done(run_dir)


def test_stage_commands_of_cheap_stages_run_again_when_done(runs, capsys):
    # report.py says "rerun `gsmv evaluate`" about a results.json that is not a run's: that must redo it.
    results = runs / "t" / "results.json"
    results.write_text(json.dumps({"kind": "something else"}))
    rc, out, err = gsmv(capsys, "evaluate", *args(runs))
    assert rc == 0, err
    assert ran(out) == {"evaluate"} and json.loads(results.read_text())["kind"] == "run"


def test_refused_config_change_writes_nothing_and_its_fix_works(runs, capsys):
    run_dir = runs / "t"
    config = (run_dir / "config.yaml").read_bytes()
    manifest = (run_dir / "manifest.json").read_bytes()
    rc, _, err = gsmv(capsys, "run", *args(runs, "verifier.lr=2e-3"))
    assert rc == 2
    one_line_error(err)
    assert "stage 'train-verifier' was run with a different config" in err
    assert (run_dir / "config.yaml").read_bytes() == config
    assert (run_dir / "manifest.json").read_bytes() == manifest
    flags = fix_flags(err)
    assert flags == ["--redo", "train-verifier"]
    rc, out, err = gsmv(capsys, "run", *flags, *args(runs, "verifier.lr=2e-3"))
    assert rc == 0, err
    assert ran(out) == {"train-verifier", "score", "score-val", "evaluate", "report"}
    assert "lr: 0.002" in (run_dir / "config.yaml").read_text()


def test_missing_upstream_fix_works_and_a_fresh_folder_stays_empty(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    rc, _, err = gsmv(capsys, "score", *args(out_dir))
    assert rc == 2
    one_line_error(err)
    assert "needs 'train-verifier' first" in err
    assert not out_dir.exists()
    flags = fix_flags(err)
    assert flags == ["--until", "score"]
    rc, _, err = gsmv(capsys, "run", *flags, *args(out_dir))
    assert rc == 0, err
    assert stages(out_dir / "t")["score"]["status"] == "done"


# ---------------------------------------------------------------- 3. one process per run folder


def test_second_run_on_a_busy_folder_names_the_holder(runs, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from gsmv.pipeline import RunLock; "
         "lock = RunLock(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()", str(runs / "t")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, out, err = gsmv(capsys, "run", *args(runs))
        assert rc == 2
        one_line_error(err)
        assert "in use by another gsmv run" in err and f"pid {holder.pid} on " in err and "since" in err
        assert ran(out) == set()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    rc, _, err = gsmv(capsys, "run", *args(runs))  # the holder ended: its lock went with it
    assert rc == 0, err


def test_other_ranks_neither_take_the_lock_nor_run_main_only_setup():
    class Rank1:
        is_main_process = False
        num_processes = 1  # no process group here: nothing to broadcast

    called = []
    pipeline._on_main(Rank1(), lambda: called.append(1))
    assert called == []


def test_plot_temp_names_are_unique(tmp_path):
    from gsmv.report import plots

    fig, (ax,) = plots._figure()
    ax.plot([0, 1], [0, 1])
    (tmp_path / ".a.png.tmp.png").mkdir()  # the fixed temp name another writer could be using
    assert plots._save(fig, tmp_path / "a.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.png.tmp.png", "a.png"]


# ---------------------------------------------------------------- 4. moved run folders resume


def test_stage_hashes_hold_no_paths():
    a = load_config("smoke", ["out_dir=/a", "name=x"])
    b = load_config("smoke", ["out_dir=/elsewhere/b", "name=y", "reuse_from=/some/run"])
    assert stage_list.stage_hashes(a) == stage_list.stage_hashes(b)


def test_renamed_run_folder_resumes_with_every_stage_skipped(runs, capsys):
    (runs / "t").rename(runs / "moved")
    moved = runs.rename(runs.parent / "elsewhere")
    rc, out, err = gsmv(capsys, "run", *args(moved, name="moved"))
    assert rc == 0, err
    assert ran(out) == set()
    assert out.count("done earlier for this config: skipped") == len(stages(moved / "moved"))


# ---------------------------------------------------------------- 5. file-system errors


def test_run_folder_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "t").write_text("not a folder")
    rc, _, err = gsmv(capsys, "run", *args(tmp_path))
    assert rc == 2
    assert f"{tmp_path / 't'}: exists and is not a folder" in one_line_error(err)


def test_out_dir_under_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    rc, _, err = gsmv(capsys, "run", *args(tmp_path / "f"))
    assert rc == 2
    assert f"{tmp_path / 'f' / 't'}: cannot create the run folder" in one_line_error(err)


def test_unwritable_run_folder_is_a_one_line_error(runs, capsys, monkeypatch):
    import os

    real_open = os.open

    def deny(path, *a, **k):  # root ignores permission bits: make the lock file's folder read-only by hand
        if str(path).endswith(pipeline.LOCK_FILE):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    rc, _, err = gsmv(capsys, "run", *args(runs))
    assert rc == 2
    assert f"{runs / 't'}: cannot write in the run folder (Permission denied)" in one_line_error(err)


def test_os_errors_anywhere_are_one_line_errors_naming_the_path(tmp_path, capsys, monkeypatch):
    def fail(*a, **k):
        raise OSError(28, "No space left on device", "/runs/t/samples/train/shard-00000.parquet")

    monkeypatch.setattr(pipeline, "run", fail)
    rc, _, err = gsmv(capsys, "run", *args(tmp_path))
    assert rc == 2
    assert one_line_error(err) == \
        "gsmv: error: /runs/t/samples/train/shard-00000.parquet: No space left on device"


# ---------------------------------------------------------------- 6. checks before the first stage


@pytest.mark.parametrize("override, key", [
    ("finetune.epochs=0", "finetune.epochs"),
    ("finetune.lr=-0.001", "finetune.lr"),
    ("verifier.lr=-1", "verifier.lr"),
    ("verifier.max_len=0", "verifier.max_len"),
    ("finetune.max_len=0", "finetune.max_len"),
    ("sample.n_test=0", "sample.n_test"),
    ("sample.n_train=0", "sample.n_train"),
    ("verifier.init=smollm2-135", "verifier.init"),  # issue 47: these failed after the generator had trained
    ("verifier.train_layers=1000", "verifier.train_layers"),
    ("model.name=tny", "model.name"),
])
def test_bad_config_stops_before_anything_is_written(tmp_path, capsys, override, key):
    rc, _, err = gsmv(capsys, "run", *args(tmp_path / "runs", override))
    assert rc == 2
    assert f"'{key}'" in one_line_error(err)
    assert not (tmp_path / "runs").exists()


def test_stage_checks_apply_only_to_the_selected_stages():
    cfg = load_config("smoke", ["sample.n_test=0", "verifier.lr=-1"])
    check_for_stages(cfg, ["finetune", "sample-train"])  # neither reads those keys
    with pytest.raises(GsmvError, match="'sample.n_test' is 0: it must be > 0"):
        check_for_stages(cfg, ["sample-test"])
    with pytest.raises(GsmvError, match="'verifier.lr' is -1.0: it must be >= 0"):
        check_for_stages(cfg, ["train-verifier"])


def test_model_names_and_train_layers_are_checked_without_loading_a_model(tmp_path, monkeypatch):
    import json

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty hub cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    from gsmv.models.loading import check_model_names

    def check(*overrides: str) -> None:
        check_model_names(load_config("smoke-synth", list(overrides)), ["finetune", "train-verifier"])

    with pytest.raises(GsmvError, match="did you mean 'smollm2-135m'"):
        check("verifier.init=smollm2-135")
    with pytest.raises(GsmvError, match=r"'verifier.train_layers' is 31: the verifier \(smollm2-135m\) has 30 layers"):
        check("verifier.init=smollm2-135m", "verifier.train_layers=31")  # the packaged model's listed count
    check("verifier.init=smollm2-135m", "verifier.train_layers=30")
    with pytest.raises(GsmvError, match=r"'finetune.train_layers' is 31: the generator \(smollm2-135m\) has 30"):
        check("model.name=smollm2-135m", "finetune.train_layers=31")
    with pytest.raises(GsmvError, match=r"'finetune.lora_rank' is set: .*model.name=tiny is a from-scratch preset"):
        check("finetune.lora_rank=8")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 3}))
    with pytest.raises(GsmvError, match=r"is 4: the verifier \(.*model\) has 3 layers"):
        check(f"verifier.init={folder}", "verifier.train_layers=4")
    check(f"verifier.init={tmp_path / 'made-later'}", "verifier.train_layers=4")  # a folder: the stage's to check
    check("verifier.init=no-such-org/no-such-model")  # the hub decides when it is on (no network call here)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GsmvError, match="HF_HUB_OFFLINE is set with no copy in the hub cache"):
        check("verifier.init=no-such-org/no-such-model")


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_stops_before_anything_is_written(tmp_path, capsys, split):
    data = tmp_path / "data"
    data.mkdir()
    for s in ("train", "test"):
        text = "" if s == split else (TINY_DATA / f"{s}.jsonl").read_text()
        (data / f"{s}.jsonl").write_text(text)
    # val_size=0: with val carved from an empty train the loader would already object to val_size.
    rc, _, err = gsmv(capsys, "run", *args(tmp_path / "runs", f"data.dir={data}", "data.val_size=0"))
    assert rc == 2
    assert f"the {split} split has no problems" in one_line_error(err)
    assert not (tmp_path / "runs").exists()
