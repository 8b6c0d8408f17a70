"""Run-folder I/O: atomic writes, Parquet shards and metrics.

Every write goes to a temporary file in the same folder and is renamed into place,
so a killed process never leaves a half-written artifact behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gsmv.errors import GsmvError


def _tmp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes 0600 files; artifacts should read like any other file the user writes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(path)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _in_temp(name: str | bytes | int) -> bool:
    """Whether a path is (inside) the temporary name of an atomic write: .NAME.XXXX.tmp, .final.tmp/ ..."""
    return isinstance(name, str) and any(p.startswith(".") and p.endswith(".tmp") for p in Path(name).parts)


def write_error(e: BaseException, path: Path) -> OSError | None:
    """`e`, raised while writing `path`, as an OSError naming `path`; None when it is not a file-system error or
    already names a real file (e.g. a folder that could not be made).

    A write that fails on a full disk raises an OSError with no file name (pyarrow's says "Error writing bytes
    to file. Detail: [errno 28] ..."), safetensors (save_pretrained) a SafetensorError "... (os error 28)", and
    an error naming a temporary file names a file the user never sees: each becomes "path: <the errno's text>".
    """
    if isinstance(e, OSError):
        if e.filename is not None and not _in_temp(e.filename):
            return None
        code = e.errno
        reason = os.strerror(code) if code else (e.strerror or str(e))
    elif type(e).__name__ == "SafetensorError":
        m = re.search(r"\(os error (\d+)\)", str(e))
        if m is None:
            return None
        code = int(m.group(1))
        reason = os.strerror(code)
    elif isinstance(e, RuntimeError) and ("PytorchStreamWriter" in str(e) or "inline_container" in str(e)):
        # torch.save (optimizer and scheduler state of a checkpoint) gives no errno when a write fails.
        code = errno.EIO
        reason = f"write failed, the disk may be full (torch.save: {str(e).splitlines()[0][:100]})"
    else:
        return None
    return OSError(code, reason, str(path))


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """A file-system error in the block, which writes `path`, is raised naming `path` (see write_error)."""
    try:
        yield
    except Exception as e:
        err = write_error(e, Path(path))
        if err is None:
            raise
        raise err from e


def os_error_message(e: OSError) -> str:
    """'path: reason' for a file-system error (the one-line form GsmvError messages use)."""
    reason = e.strerror or str(e)
    return f"{e.filename}: {reason}" if e.filename else reason


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GsmvError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise GsmvError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_json_or_none(path: str | Path) -> Any:
    """The file's JSON, or None when it is missing or not JSON (for optional or possibly damaged files)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, str, Any]]:
    """(0-based line index, "path:line", record) for each non-blank line; bad lines are one-line GsmvErrors.

    Lines end at b"\\n" only (a "\\r" before it is JSON whitespace): str.splitlines would also split
    inside strings at U+2028, U+2029 or \\x85, which JSON allows there unescaped.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except FileNotFoundError:
        raise GsmvError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GsmvError(f"{path}: cannot read ({e})") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path}:{i + 1}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise GsmvError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield i, where, rec


def write_parquet(path: str | Path, table: pa.Table) -> None:
    """Write a Parquet file atomically."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(path)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def shard_path(folder: str | Path, index: int) -> Path:
    return Path(folder) / f"shard-{index:05d}.parquet"


def list_shards(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("shard-*.parquet"))


# What is wrong with a finished stage's output: (what to delete so that the stage makes it again, or None when
# there is nothing to delete; a one-line reason). Each stage module checks the files it writes.
Damage = tuple[Path | None, str]


def parquet_rows(path: Path) -> int | None:
    """The row count in a Parquet file's footer (cheap: the data is not read); None if it is not readable."""
    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a bad file
        return None


def listed_shards(folder: Path) -> list[Path]:
    """The shards a finished shard folder holds: its done.json's count, else whatever is there."""
    info = read_json_or_none(folder / "done.json")
    if isinstance(info, dict) and isinstance(info.get("shards"), int):
        return [shard_path(folder, i) for i in range(info["shards"])]
    return list_shards(folder)


def check_files(files: list[Path]) -> list[Damage]:
    """Every file exists, and a .json one holds an object (the check of stages with no check of their own)."""
    out: list[Damage] = []
    for p in files:
        if not p.exists():
            out.append((None, f"{p} is missing"))
        elif p.suffix == ".json" and not isinstance(read_json_or_none(p), dict):
            out.append((p, f"{p} is not a JSON object"))
    return out


def safetensors_ok(path: Path) -> bool:
    """The header parses and the file is as long as the header says (a truncated copy is not)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > size:
                return False
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def shard_columns(path: str | Path) -> list[str]:
    """The column names of a Parquet shard (its footer only); a one-line GsmvError when it is not readable."""
    try:
        return pq.read_schema(path).names
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise GsmvError(f"{path}: unreadable Parquet shard ({_first_line(e)})") from None


def read_shard(path: str | Path, columns: Sequence[str] | None = None, optional: Sequence[str] = ()) -> pa.Table:
    """One shard's `columns` (every column when None) and whichever of `optional` it has, in that order.

    The one reader of shard files: a bad file or a missing column of `columns` is a one-line GsmvError naming
    the file."""
    names = shard_columns(path)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise GsmvError(f"{path}: missing column(s) {', '.join(missing)}")
        columns = [*columns, *[c for c in optional if c in names and c not in columns]]
    try:
        return pq.read_table(path, columns=columns)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise GsmvError(f"{path}: unreadable Parquet shard ({_first_line(e)})") from None


@dataclass
class Shards:
    """A shard folder read as one table (the shards concatenated in order); row r came from paths[shard_of[r]]."""

    table: pa.Table
    paths: list[Path]
    shard_of: np.ndarray  # int64, one per row


def read_shards(folder: str | Path, columns: Sequence[str] | None = None, optional: Sequence[str] = ()) -> Shards:
    """Every shard of a folder, read with read_shard; a GsmvError when the folder has none."""
    paths = list_shards(folder)
    if not paths:
        raise GsmvError(f"{folder}: no shard-*.parquet files (has this stage run?)")
    tables = [read_shard(p, columns, optional) for p in paths]
    shard_of = np.repeat(np.arange(len(paths), dtype=np.int64), [t.num_rows for t in tables])
    return Shards(pa.concat_tables(tables, promote_options="default"), paths, shard_of)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder `tmp` to `dest`, replacing an older `dest` (moved aside, then deleted)."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except OSError:
            os.replace(old, dest)  # put it back: left as .NAME.old-PID, the next run would delete it
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces `path` only when the block finishes."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            replace_dir(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


class MetricsLog:
    """Append-only metrics.jsonl: one JSON record per line, tagged with the stage."""

    def __init__(self, path: str | Path, stage: str, enabled: bool = True):
        self.path = Path(path)
        self.stage = stage
        self.enabled = enabled

    def log(self, **record: Any) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"stage": self.stage, "time": round(time.time(), 3), **record}
        with writing(self.path), open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


def read_metrics(path: str | Path, stage: str | None = None) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        # A line cut short by a kill is skipped rather than failing the report.
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if stage is None or rec.get("stage") == stage:
            out.append(rec)
    return out


# The problem split whose problems each sample split holds (test_greedy: the test problems, sampled at T=0).
REFERENCE_SPLIT = {"train": "train", "val": "val", "test": "test", "test_greedy": "test"}


class RunPaths:
    """Where each artifact of a run folder lives (see DESIGN.md, Artifacts)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.manifest = self.root / "manifest.json"
        self.metrics = self.root / "metrics.jsonl"
        self.tokenizer = self.root / "tokenizer"
        self.generator = self.root / "generator"  # step-NNNNNN/ checkpoints and final/
        self.generator_final = self.generator / "final"
        self.verifier = self.root / "verifier"
        self.verifier_final = self.verifier / "final"
        self.results = self.root / "results.json"
        self.report_md = self.root / "report.md"
        self.report_html = self.root / "report.html"
        self.plots = self.root / "plots"
        self.search = self.root / "search"  # value-guided search on test problems: shard-NNNNN.parquet, done.json

    def samples(self, split: str) -> Path:
        """split: train | val | test | test_greedy."""
        return self.root / "samples" / split

    def scores(self, split: str) -> Path:
        return self.root / "scores" / split
