"""docs/research/scripts/strength_grid.py at tiny size: every cell of the grid runs and is tabulated."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "research" / "scripts"
sys.path.insert(0, str(SCRIPTS))
import strength_grid  # noqa: E402


@pytest.mark.slow
def test_the_gpu_grid_script_at_tiny_size_runs_every_cell_and_tabulates_it(tmp_path, capsys):
    # The GPU command itself, at the tiny scale (GSMV_GRID_SCALE), on the CPU.
    env = {**os.environ, "GSMV_GRID_SCALE": "tiny", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", str(SCRIPTS / "gpu-synth-grid.sh"), str(tmp_path)], env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    cells = json.loads((tmp_path / "grid.json").read_text())
    names = [Path(c["run"]).name for c in cells]
    assert names == ["small-ver-small", "large-ver-large", "small-ver-large", "large-ver-small"]
    by = {Path(c["run"]).name: c for c in cells}
    # A cross cell ranks its row's generator's samples (linked, not retrained) with the other generator's start.
    assert by["small-ver-large"]["generator"] == by["small-ver-small"]["generator"]
    assert by["small-ver-large"]["verifier_init"].endswith("large-ver-large/generator/final")
    for c in cells:
        m = c["metrics"]
        gain = m["gain_over_greedy"]["value"]
        assert gain == pytest.approx(m[f"best-of-{c['n']}"]["value"] - m["greedy"]["value"])
        assert m["gain_over_greedy"]["ci_low"] <= gain <= m["gain_over_greedy"]["ci_high"]
        assert 0 <= c["coverage"] <= 1 and c["top_k_voting"]["1"] == pytest.approx(m[f"best-of-{c['n']}"]["value"])
    assert (tmp_path / "strength.png").stat().st_size > 0
    assert "| small-ver-large |" in (tmp_path / "grid.md").read_text()
    # A folder that is no finished run is one line.
    assert strength_grid.main(["table", str(tmp_path / "nothing"), "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("strength_grid:") and "\n" not in err


@pytest.mark.parametrize("scale", sorted(strength_grid.SCALES))
def test_every_scale_is_a_valid_config_for_every_generator(scale):
    from gsmv.config import load_config

    spec = strength_grid.SCALES[scale]
    for over in spec["generators"].values():
        cfg = load_config(spec["base"], [*spec["all"], *over])
        assert cfg.data.source == "synth"
