"""manifest.json: the record, its status values, and is_current (a reader asking whether a stage's outputs
belong to its config)."""

import json

import pytest

from gsmv.config import load_config
from gsmv.errors import GsmvError
from gsmv.manifest import Manifest, Status, is_current
from gsmv.stages import stage_hashes


def test_is_current_only_for_done_with_this_configs_hash(tmp_path):
    cfg = load_config("smoke", [f"out_dir={tmp_path}"])
    assert not is_current(cfg, "search")  # no manifest
    m = Manifest(cfg.run_dir / "manifest.json")
    m.set("search", status=Status.DONE, hash=stage_hashes(cfg)["search"])
    assert is_current(cfg, "search")
    other = load_config("smoke", [f"out_dir={tmp_path}", "search.expansions=2"])
    assert not is_current(other, "search")  # same folder, another config
    m.set("search", status=Status.RUNNING)
    assert not is_current(cfg, "search")
    (cfg.run_dir / "manifest.json").write_text("{not json")
    assert not is_current(cfg, "search")  # a reader never raises on a damaged manifest


def test_statuses_are_written_as_plain_strings(tmp_path):
    m = Manifest(tmp_path / "manifest.json")
    m.set("label", status=Status.STALE, hash="h")
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"]["label"]["status"] == "stale"
    assert Manifest(tmp_path / "manifest.json").is_done("label", "h") is False
    m.set("label", status=Status.DONE)
    assert Manifest(tmp_path / "manifest.json").is_done("label", "h")


def test_a_file_that_is_not_a_manifest_is_one_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(GsmvError, match="not a gsmv manifest"):
        Manifest(tmp_path / "manifest.json")
