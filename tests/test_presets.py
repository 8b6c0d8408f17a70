"""`gsmv presets`: what a user reads is what ships (one line each, purpose, measured time, needs)."""

from __future__ import annotations

import contextlib
import io

from gsmv.cli import DEFAULT_PRESET, main
from gsmv.config import CONFIG_DIR
from gsmv.presets import PRESETS, shipped


def test_every_shipped_preset_has_an_entry_and_every_entry_ships():
    files = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert files - PRESETS.keys() == set(), "add the new preset's line to gsmv.presets.PRESETS"
    assert PRESETS.keys() - files == set(), "an entry of gsmv.presets.PRESETS names no YAML in configs/"
    assert DEFAULT_PRESET in files
    assert len(files) <= 10  # the ceiling: presets a user picks from, not one per experiment


def test_entries_say_what_for_how_long_and_what_they_need():
    for name, info in PRESETS.items():
        assert info.purpose and info.needs, name
        assert info.time == "not measured" or info.time.endswith((" s", "min", "h")), (name, info.time)
    # Only what never ran on a GPU is unmeasured: every CPU preset has a time (issue 46: smoke-synth had none).
    unmeasured = {name for name, info in PRESETS.items() if info.time == "not measured"}
    assert unmeasured == {"gpu-gpt2", "gpu-qwen2.5-0.5b", "gpu-smollm2"}


def test_gsmv_presets_prints_one_line_per_shipped_preset():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["presets"]) == 0
    lines = out.getvalue().splitlines()
    table = lines[1 : 1 + len(shipped())]
    assert [line.split()[0] for line in table] == shipped()
    assert f"{DEFAULT_PRESET} (default)" in out.getvalue()
    for name, line in zip(shipped(), table, strict=True):
        assert PRESETS[name].time in line and PRESETS[name].purpose in line
    assert "docs/research/configs/" in out.getvalue()  # where the one-experiment configs went
