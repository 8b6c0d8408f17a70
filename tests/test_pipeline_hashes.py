"""The pipeline's config hashes decide what is redone: check they follow the data flow."""

import pytest

from gsmv import pipeline
from gsmv.config import load_config
from gsmv.errors import GsmvError


def changed(a, b):
    ha, hb = pipeline.stage_hashes(a), pipeline.stage_hashes(b)
    return {k for k in ha if ha[k] != hb[k]}


def test_verifier_change_redoes_only_downstream_of_the_verifier():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["verifier.level=solution"])) == {
        "train-verifier", "score", "evaluate", "report"}


def test_n_test_change_keeps_generator_train_samples_and_verifier():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["sample.n_test=16"])) == {"sample-test", "score", "evaluate", "report"}


def test_n_train_change_keeps_generator_and_test_samples():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["sample.n_train=2"])) == {
        "sample-train", "label", "train-verifier", "score", "evaluate", "report"}


def test_finetune_change_redoes_everything():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["finetune.lr=0.1"])) == set(pipeline.STAGE_NAMES)


def test_report_only_change():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["report.html_problems=5"])) == {"report"}


def test_ablation_presets_share_upstream_with_cpu():
    cpu = pipeline.stage_hashes(load_config("cpu"))
    for name in ("cpu-solution", "cpu-nolm", "cpu-nodropout"):
        h = pipeline.stage_hashes(load_config(name))
        for stage in ("finetune", "sample-train", "sample-val", "label", "sample-test", "sample-test-greedy"):
            assert h[stage] == cpu[stage], (name, stage)
        assert h["train-verifier"] != cpu["train-verifier"]


def test_stage_selection():
    cfg = load_config("smoke")
    assert pipeline._select(cfg, "score", "evaluate", None) == ["score", "evaluate"]
    assert pipeline._select(cfg, None, "finetune", None) == ["finetune"]
    with pytest.raises(GsmvError, match="unknown stage 'nope'"):
        pipeline._select(cfg, "nope", None, None)
    no_greedy = load_config("smoke", ["sample.greedy_test=false"])
    assert "sample-test-greedy" not in pipeline._select(no_greedy, None, None, None)
