"""Run-folder I/O: atomic writes, Parquet shards and metrics.

Every write goes to a temporary file in the same folder and is renamed into place,
so a killed process never leaves a half-written artifact behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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


def read_shards(folder: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Concatenate all shards of a folder (in shard order)."""
    shards = list_shards(folder)
    if not shards:
        raise GsmvError(f"{folder}: no shard-*.parquet files (has this stage run?)")
    tables = []
    for p in shards:
        try:
            tables.append(pq.read_table(p, columns=columns))
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise GsmvError(f"{p}: unreadable Parquet shard ({e})") from None
    return pa.concat_tables(tables, promote_options="default")


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder `tmp` to `dest`, replacing an older `dest` (moved aside, then deleted)."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces `path` only when the block finishes."""
    path = Path(path)
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
        with open(self.path, "a") as f:
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
