"""Fixtures for the data tests: the real GSM8K folder (skipped when absent) and quick configs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from gsmv.config import RunConfig, load_config
from gsmv.data.tasks import data_dir


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """../shared/data/gsm8k (or $GSMV_DATA_DIR); the full-dataset checks skip without it."""
    folder = data_dir(load_config(None, []))
    if not ((folder / "train.jsonl").is_file() and (folder / "test.jsonl").is_file()):
        pytest.skip(f"GSM8K not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def gsm8k_records(gsm8k_dir) -> dict[str, list[dict]]:
    return {
        split: [json.loads(line) for line in (gsm8k_dir / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "test")
    }


@pytest.fixture
def make_cfg() -> Callable[..., RunConfig]:
    """make_cfg(data_dir, "data.val_size=5", ...) → a RunConfig reading that folder."""

    def make(folder: Path, *overrides: str) -> RunConfig:
        return load_config(None, [f"data.dir={folder}", *overrides])

    return make
