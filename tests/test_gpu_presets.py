"""The GPU presets, which no CPU can run at their size: each loads and passes every stage's checks, and the
SmolLM2 recipe (gpu-smollm2) runs end to end at tiny size on the CPU with a tiny local Llama in SmolLM2's place
(same architecture family: tied embeddings, a linear head on a generator start)."""

from __future__ import annotations

import json

import pytest

from gsmv import cli
from gsmv.config import check_for_stages, load_config
from gsmv.stages import STAGE_NAMES

GPU_PRESETS = ("gpu-gpt2", "gpu-qwen2.5-0.5b", "gpu-smollm2")


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_presets_pass_every_stage_check(name):
    cfg = load_config(name)
    check_for_stages(cfg, list(STAGE_NAMES))
    assert cfg.name == name


@pytest.mark.slow
def test_the_smollm2_recipe_runs_tiny_on_the_cpu(tmp_path, tiny_llama_dir):
    over = [f"out_dir={tmp_path}", f"model.name={tiny_llama_dir}", "device=cpu", "threads=1",
            "data.synth.train_size=60", "data.synth.test_size=6", "data.val_size=10", "data.synth.max_steps=1", "data.synth.max_distractors=0",
            "finetune.batch_size=8", "finetune.epochs=1", "finetune.save_every=0", "verifier.save_every=0",
            "verifier.batch_size=8", "sample.n_train=2", "sample.train_problems=20", "sample.n_val=2",
            "sample.n_test=4", "sample.max_new_tokens=32", "sample.batch_size=16", "score.batch_size=16",
            "evaluate.bootstrap=20", "report.html_problems=3"]
    assert cli.main(["run", "--config", "gpu-smollm2", *over]) == 0
    run = tmp_path / "gpu-smollm2"
    vcfg = json.loads((run / "verifier" / "final" / "verifier_config.json").read_text())
    assert vcfg["head"] == "linear"
    res = json.loads((run / "results.json").read_text())
    assert res["n_samples"] == 4 and res["n_problems"] == 6
    assert "aggregates" in res["steps"] or "note" in res["steps"]
