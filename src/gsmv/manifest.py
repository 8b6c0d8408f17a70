"""manifest.json: the record of which stage ran with which config hash, its status, timings and outputs.

Written by the main process of `gsmv run` only (atomically); read by every command that needs to know whether
a stage's outputs belong to the config at hand (`is_current`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from gsmv.artifacts import RunPaths, atomic_write_json, read_json, read_json_or_none
from gsmv.config import RunConfig
from gsmv.errors import GsmvError


class Status(StrEnum):
    RUNNING = "running"  # started (or killed while running: resumed by the next run)
    DONE = "done"  # finished for the recorded hash
    INCOMPLETE = "incomplete"  # was done, its outputs were found damaged: runs again
    STALE = "stale"  # was done on upstream outputs that were remade since: runs again (cheaply where whole)


def _done(rec: Any, want: str) -> bool:
    return isinstance(rec, dict) and rec.get("status") == Status.DONE and rec.get("hash") == want


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Manifest:
    """manifest.json: stage → {status, hash, started, finished, seconds, outputs}."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {"stages": {}}
        if path.exists():
            self.data = read_json(path)
            if not isinstance(self.data, dict) or not isinstance(self.data.get("stages"), dict):
                raise GsmvError(f"{path}: not a gsmv manifest (no 'stages' object)")

    def get(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {})

    def set(self, stage: str, **fields: Any) -> None:
        self.data["stages"].setdefault(stage, {}).update(fields)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def is_done(self, stage: str, want: str) -> bool:
        """Recorded done for the config hash `want` (whether its outputs are whole is the stage's check)."""
        return _done(self.get(stage), want)


def is_current(cfg: RunConfig, stage: str) -> bool:
    """Whether cfg's run folder records `stage` done for cfg (its hash covers everything upstream): a reader's
    question, e.g. evaluate asking whether search results belong to this verifier. Never raises."""
    from gsmv.stages import stage_hashes

    data = read_json_or_none(RunPaths(cfg.run_dir).manifest)
    rec = data.get("stages", {}).get(stage) if isinstance(data, dict) else None
    return _done(rec, stage_hashes(cfg)[stage])
