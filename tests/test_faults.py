"""Issue 24: disk-full and permission faults on the write paths of a run.

The machines run as root (permission bits prove nothing) and no test can count on mounting a small file system,
so each fault is injected by monkeypatching the call that writes one artifact: the write gets half way (half
the bytes land in the file being written) and then fails the way the library fails on a real full disk or a
refused write (checked by hand on a 64 KiB tmpfs: Python file writes raise OSError(28) with no file name,
pyarrow OSError(28, "Error writing bytes to file. Detail: [errno 28] ..."), transformers' save_pretrained a
SafetensorError "... I/O error: No space left on device (os error 28)"). EACCES is raised in the same shapes.

For each write site and errno:
1. the command exits with 2 and prints one line on stderr, naming the artifact and the errno's text;
2. every file the run folder held when the write began is byte-identical afterwards, and nothing half-written
   is left under a real artifact's name (only hidden temp files, which the next run removes);
3. the next `gsmv run`, without the fault, finishes with outputs identical to an uninterrupted run's.

One uninterrupted run (module fixture) is the reference and the starting point: each test copies it, and a
`--redo` (or a stage command, for files that exist already and must survive the failed rewrite) brings the
failing write back.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_overrides import TINY_OVERRIDES

from gsmv import cli

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = ROOT / "tests" / "assets" / "tiny_gsm8k"
# The smallest whole run the suite uses (as in test_pipeline_hardening): two test shards, so one is written
# before the other fails.
OVERRIDES = [f"data.dir={TINY_DATA}", *TINY_OVERRIDES, "data.train_limit=48", "data.test_limit=8",
             "sample.n_test=2", "sample.problems_per_shard=4"]
ERRNOS = [errno.ENOSPC, errno.EACCES]
LOCK = ".gsmv.lock"  # emptied when the run releases it
# Files that differ between two uninterrupted runs in different folders (absolute paths, the clock); the
# manifest is compared by status and hash instead.
VOLATILE = {"config.yaml", "manifest.json", "metrics.jsonl", LOCK, "verifier/final/README.md",
            "verifier/final/trainer_state.json"}


def args(out_dir: Path, *extra: str) -> list[str]:
    return ["--config", "smoke", f"out_dir={out_dir}", "name=t", *OVERRIDES, *extra]


def is_temp(rel: str) -> bool:
    """Under a temporary name of an atomic write (.NAME.XXXX.tmp, .final.tmp/ ...)."""
    return any(part.startswith(".") and part.endswith(".tmp") for part in Path(rel).parts)


def hashes(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != LOCK}


def normalized(run_dir: Path, rel: str) -> bytes:
    data = (run_dir / rel).read_bytes()
    if rel == "report.md":  # "Generated <date> UTC." is the clock
        data = re.sub(rb"^Generated [^.]*\.", b"", data, flags=re.M)
    return data


def stage_records(run_dir: Path) -> dict[str, tuple[str, str]]:
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return {k: (v["status"], v["hash"]) for k, v in stages.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run: out_dir holding the run folder 't'."""
    out = tmp_path_factory.mktemp("faults_reference")
    assert cli.main(["run", *args(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No progress bars on stderr: the error line is all a failed command may print there."""
    import tqdm.std

    real = tqdm.std.tqdm.__init__

    def init(self, *a, **k):
        k["disable"] = True
        real(self, *a, **k)

    monkeypatch.setattr(tqdm.std.tqdm, "__init__", init)


# ---------------------------------------------------------------- the faults


class Fault:
    """One write that fails half way: `matches(path)` picks it; `snapshot` is the run folder at that moment."""

    def __init__(self, run_dir: Path, err: int, matches: Callable[[Path, bytes | None], bool]):
        self.run_dir, self.err, self.matches = run_dir, err, matches
        self.snapshot: dict[str, str] | None = None

    def fire(self, path: Path, data: bytes | None = None) -> bool:
        if self.snapshot is not None or not self.matches(path, data):
            return False
        self.snapshot = {k: v for k, v in hashes(self.run_dir).items() if not is_temp(k)}
        return True

    @property
    def strerror(self) -> str:
        return os.strerror(self.err)


def half(path: Path) -> None:
    """Cut a file the real call wrote to half its size: where a write failing midway leaves it."""
    os.truncate(path, path.stat().st_size // 2)


def fault_python_write(monkeypatch, fault: Fault) -> None:
    """Path.write_bytes (atomic_write_bytes: json, text, PNG) writes half and fails like write(2) on a full disk:
    an OSError with no file name."""
    real = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if not fault.fire(self, bytes(data)):
            return real(self, data)
        real(self, data[: len(data) // 2])
        raise OSError(fault.err, fault.strerror)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def fault_parquet(monkeypatch, fault: Fault) -> None:
    """pyarrow.parquet.write_table (write_parquet) writes half and fails as pyarrow does."""
    real = pq.write_table

    def write_table(table, where, *a, **k):
        if not fault.fire(Path(where)):
            return real(table, where, *a, **k)
        real(table, where, *a, **k)
        half(Path(where))
        raise OSError(fault.err, f"Error writing bytes to file. Detail: [errno {fault.err}] {fault.strerror}")

    monkeypatch.setattr(pq, "write_table", write_table)


def fault_safetensors(monkeypatch, fault: Fault) -> None:
    """save_pretrained's safetensors write (model.safetensors) writes half and fails as safetensors does."""
    from safetensors import SafetensorError
    from transformers import modeling_utils

    real = modeling_utils.safe_save_file

    def save_file(tensors, filename, *a, **k):
        if not fault.fire(Path(filename)):
            return real(tensors, filename, *a, **k)
        real(tensors, filename, *a, **k)
        half(Path(filename))
        raise SafetensorError(f"Error while serializing: I/O error: {fault.strerror} (os error {fault.err})")

    monkeypatch.setattr(modeling_utils, "safe_save_file", save_file)


def fault_rename(monkeypatch, fault: Fault) -> None:
    """os.replace of the finished temp file onto the artifact fails (as os.replace does: naming both)."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if not fault.fire(Path(src), Path(src).read_bytes() if Path(src).is_file() else None):
            return real(src, dst, *a, **k)
        raise OSError(fault.err, fault.strerror, str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", replace)


def temp_of(rel: str) -> Callable[[Path, Path], bool]:
    """The temporary file an atomic write of run_dir/rel writes first (.NAME.XXXX.tmp next to it)."""
    def matches(run_dir: Path, path: Path) -> bool:
        target = run_dir / rel
        return path.parent == target.parent and path.name.startswith(f".{target.name}.") and path.suffix == ".tmp"
    return matches


def manifest_recording(stage: str) -> Callable[[Path, Path, bytes | None], bool]:
    """The manifest write that records `stage` done."""
    def matches(run_dir: Path, path: Path, data: bytes | None) -> bool:
        return temp_of("manifest.json")(run_dir, path) and \
            json.loads(data)["stages"].get(stage, {}).get("status") == "done"
    return matches


@dataclass(frozen=True)
class Site:
    command: tuple[str, ...]  # what brings the write back on a copy of the finished reference run
    install: Callable  # how its write fails midway: fault_python_write | fault_parquet | fault_safetensors
    matches: Callable[[Path, Path, bytes | None], bool]  # (run_dir, path written, data) → is it the one
    names: str  # the path (relative to the run folder) the error line must name


def on(rel: str) -> Callable[[Path, Path, bytes | None], bool]:
    m = temp_of(rel)
    return lambda run_dir, path, data: m(run_dir, path)


SITES = {
    # The second of the two test shards: the first is written (and must survive) when it fails.
    "sample-shard": Site(("run", "--redo", "sample-test"), fault_parquet, on("samples/test/shard-00001.parquet"),
                         "samples/test/shard-00001.parquet"),
    # The final verifier folder, written under verifier/.final.tmp by save_pretrained.
    "checkpoint": Site(("run", "--redo", "train-verifier"), fault_safetensors,
                       lambda run_dir, path, data: path == run_dir / "verifier/.final.tmp/model.safetensors",
                       "verifier/final"),
    "manifest": Site(("run", "--redo", "evaluate"), fault_python_write, manifest_recording("evaluate"),
                     "manifest.json"),
    # Stage commands on the finished run: results.json and the report files exist and must survive the rewrite.
    "results.json": Site(("evaluate",), fault_python_write, on("results.json"), "results.json"),
    "report.md": Site(("report",), fault_python_write, on("report.md"), "report.md"),
    "report.html": Site(("report",), fault_python_write, on("report.html"), "report.html"),
    "plot": Site(("report",), fault_python_write, on("plots/scores.png"), "plots/scores.png"),
}


# Each site's write failing midway; and the rename that puts a finished temp file in place, for two of them.
CASES = [(site, "write") for site in SITES] + [(site, "rename") for site in ("manifest", "results.json")]


def gsmv(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("site, how", CASES, ids=[f"{s}-{h}" for s, h in CASES])
def test_a_write_failing_midway_loses_nothing_and_the_next_run_finishes(reference, tmp_path, capsys, monkeypatch,
                                                                        site, how, err):
    spec = SITES[site]
    out_dir = tmp_path / "runs"
    shutil.copytree(reference, out_dir, symlinks=True)
    run_dir = out_dir / "t"
    fault = Fault(run_dir, err, lambda path, data: spec.matches(run_dir, path, data))

    with monkeypatch.context() as m:
        (spec.install if how == "write" else fault_rename)(m, fault)
        rc, _, stderr = gsmv(capsys, [*spec.command, *args(out_dir)])
    assert fault.snapshot is not None, f"the {site} write never happened"

    # 1. one line naming the artifact and the errno
    assert rc == 2, stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr == f"gsmv: error: {run_dir / spec.names}: {os.strerror(err)}\n"

    # 2. what was there when the write began is intact; nothing half-written under an artifact's name
    after = hashes(run_dir)
    changed = [k for k, v in fault.snapshot.items() if after.get(k) != v]
    assert changed == [], f"changed by the failed {site} write: {changed}"
    new = [k for k in after if k not in fault.snapshot and not is_temp(k)]
    assert new == [], f"left by the failed {site} write: {new}"

    # 3. the next run finishes, to the outputs of an uninterrupted run
    rc, _, stderr = gsmv(capsys, ["run", *args(out_dir)])
    assert rc == 0, stderr
    ref_dir = reference / "t"
    want, got = hashes(ref_dir), hashes(run_dir)
    assert sorted(got) == sorted(want)
    differ = [k for k in want if k not in VOLATILE and k != "report.md" and got[k] != want[k]]
    assert differ == [], f"differ from the uninterrupted run: {differ}"
    assert normalized(run_dir, "report.md") == normalized(ref_dir, "report.md")
    assert stage_records(run_dir) == stage_records(ref_dir)


def test_training_plot_shows_the_attempt_that_made_the_model():
    """A training retried after a failed write (or resumed from a checkpoint) logs its steps again: the plot keeps
    the last attempt's, not both (the checkpoint site above compares training.png with an uninterrupted run's)."""
    from gsmv.report.plots import training_series

    def attempt(start: int, steps: range, loss: float) -> list[dict]:
        return [{"stage": "train-verifier", "event": "start", "step": start},
                *({"stage": "train-verifier", "step": s, "loss": loss} for s in steps),
                {"stage": "train-verifier", "step": steps[-1], "val_loss": loss}]

    retried = attempt(0, range(5, 15, 5), 9.0) + attempt(0, range(5, 15, 5), 1.0)
    assert training_series(retried)["train-verifier"] == \
        training_series(attempt(0, range(5, 15, 5), 1.0))["train-verifier"]
    resumed = attempt(0, range(5, 30, 5), 9.0) + attempt(20, range(25, 35, 5), 1.0)
    s = training_series(resumed)["train-verifier"]
    assert s["train loss"] == ([5.0, 10.0, 15.0, 20.0, 25.0, 30.0], [9.0] * 4 + [1.0] * 2)
    assert s["val loss"] == ([30.0], [1.0])


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
def test_a_folder_rewrite_whose_rename_fails_keeps_the_older_folder(tmp_path, monkeypatch, err):
    """atomic_dir / replace_dir over an existing folder (a model or tokenizer folder written again): the older
    folder is moved aside first; when the new one cannot take its place, the older one comes back."""
    from gsmv.artifacts import atomic_dir

    dest = tmp_path / "final"
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"older")
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(src).name.endswith(".tmp"):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as e, atomic_dir(dest) as tmp:
        (tmp / "model.safetensors").write_bytes(b"newer")
    assert (e.value.errno, e.value.filename) == (err, str(dest))
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    assert (dest / "model.safetensors").read_bytes() == b"older"


def test_a_checkpoint_whose_torch_save_fails_names_the_folder(tmp_path):
    # torch.save raises a RuntimeError with no errno when the disk fills (seen on a full tmpfs); the resumable
    # state of step checkpoints is written with it.
    from gsmv.artifacts import writing

    dest = tmp_path / "verifier" / "step-000200"
    with pytest.raises(OSError) as e, writing(dest):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 128 vs 64")
    assert e.value.filename == str(dest) and "disk may be full" in e.value.strerror
    with pytest.raises(ValueError), writing(dest):  # not a write failure: untouched
        raise ValueError("a bug")
