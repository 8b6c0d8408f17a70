"""Stage hashes decide what is redone: check they follow the data flow (gsmv.stages), and stage selection."""

from pathlib import Path

import pytest

from gsmv import pipeline, stages
from gsmv.config import load_config
from gsmv.errors import GsmvError

RESEARCH_CONFIGS = Path(__file__).resolve().parents[1] / "docs" / "research" / "configs"


def changed(a, b):
    ha, hb = stages.stage_hashes(a), stages.stage_hashes(b)
    return {k for k in ha if ha[k] != hb[k]}


def test_verifier_change_redoes_only_downstream_of_the_verifier():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["verifier.level=solution"])) == {
        "train-verifier", "score", "score-val", "search", "evaluate", "report"}


def test_search_change_redoes_only_search_and_what_reads_it():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["search.expansions=2"])) == {"search", "evaluate", "report"}
    # Turning search on or off, or its batch size, changes no result.
    assert changed(base, load_config("smoke", ["search.enabled=true", "search.batch_size=8"])) == set()


def test_n_test_change_keeps_generator_train_samples_and_verifier():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["sample.n_test=16"])) == {
        "sample-test", "label-test", "score", "evaluate", "report"}


def test_n_train_change_keeps_generator_and_test_samples():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["sample.n_train=2"])) == {
        "sample-train", "label", "train-verifier", "score", "score-val", "search", "evaluate", "report"}


def test_finetune_change_redoes_everything():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["finetune.lr=0.1"])) == set(stages.STAGE_NAMES)


def test_a_later_key_at_its_default_keeps_the_hashes_of_runs_made_before_it():
    from gsmv.config import hash_dict, to_dict

    base = load_config("smoke")
    assert "rank_weight" in to_dict(base.verifier) and "rank_weight" not in hash_dict(base.verifier)
    assert "rank_weight" in hash_dict(load_config("smoke", ["verifier.rank_weight=0.5"]).verifier)
    assert changed(base, load_config("smoke", ["verifier.rank_weight=0.5"])) == {
        "train-verifier", "score", "score-val", "search", "evaluate", "report"}


@pytest.mark.parametrize("override", ["verifier.pack_tokens=0", "sample.batch_size=7", "search.batch_size=3",
                                      "sample.gpu_memory_utilization=0.5", "search.enabled=true"])
def test_speed_only_fields_are_in_no_stage_hash(override):
    assert changed(load_config("smoke"), load_config("smoke", [override])) == set()


def test_cadence_fields_are_in_the_stage_hash_but_not_the_training_hash():
    from gsmv.train.loop import train_hash

    base, other = load_config("smoke"), load_config("smoke", ["verifier.save_every=7"])
    assert changed(base, other) == {"train-verifier", "score", "score-val", "search", "evaluate", "report"}
    assert train_hash(base, base.verifier) == train_hash(other, other.verifier)


def test_score_aggregate_redoes_what_ranks_by_it_not_the_scores():
    """How search and evaluate rank by the verifier's values: the stored scores themselves stay."""
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["score.aggregate=min"])) == {"search", "evaluate", "report"}


def test_report_only_change():
    base = load_config("smoke")
    assert changed(base, load_config("smoke", ["report.html_problems=5"])) == {"report"}


@pytest.mark.parametrize("base, ablations", [
    ("synth", ("synth-solution", "synth-nolm", "synth-nodropout", "synth-lm-samples", "synth-process",
               "synth-verifier-epochs3", "synth-rank")),
    ("gsm8k-cpu", ("gsm8k-cpu-solution", "gsm8k-cpu-nolm", "gsm8k-cpu-nodropout")),
])
def test_ablation_presets_share_upstream_with_their_base(base, ablations):
    from gsmv.data.tasks import data_dir

    if base.startswith("gsm8k") and not (data_dir(load_config(base)) / "train.jsonl").is_file():
        pytest.skip("GSM8K not found locally")
    ref = stages.stage_hashes(load_config(base))
    for name in ablations:
        cfg = load_config(RESEARCH_CONFIGS / f"{name}.yaml")
        assert cfg.reuse_from == f"runs/{base}"
        h = stages.stage_hashes(cfg)
        for stage in ("finetune", "sample-train", "sample-val", "label", "sample-test", "sample-test-greedy"):
            assert h[stage] == ref[stage], (name, stage)
        assert h["train-verifier"] != ref["train-verifier"]


def test_data_content_is_part_of_the_hashes(tmp_path, tiny_data_dir):
    import shutil

    shutil.copytree(tiny_data_dir, tmp_path / "d")
    cfg = load_config("smoke", [f"data.dir={tmp_path / 'd'}"])
    before = stages.stage_hashes(cfg)
    test = tmp_path / "d" / "test.jsonl"
    test.write_text(test.read_text().replace("apples", "pears"))
    after = stages.stage_hashes(cfg)
    assert after["finetune"] == before["finetune"]  # train is unchanged: the generator stays
    assert after["sample-test"] != before["sample-test"] and after["evaluate"] != before["evaluate"]
    train = tmp_path / "d" / "train.jsonl"
    train.write_text(train.read_text().replace("apples", "pears"))
    assert stages.stage_hashes(cfg)["finetune"] != after["finetune"]


def test_stage_selection():
    cfg = load_config("smoke")
    assert pipeline._select(cfg, "score", "evaluate", None) == ["score", "score-val", "evaluate"]
    assert pipeline._select(cfg, None, "finetune", None) == ["finetune"]
    with pytest.raises(GsmvError, match="unknown stage 'nope'"):
        pipeline._select(cfg, "nope", None, None)
    no_greedy = load_config("smoke", ["sample.greedy_test=false"])
    assert "sample-test-greedy" not in pipeline._select(no_greedy, None, None, None)


def test_run_seed_redoes_every_seeded_stage_and_reaches_the_stages(tmp_path, tiny_data_dir, monkeypatch):
    from gsmv.config import with_run_seed

    base = load_config("smoke", [f"data.dir={tiny_data_dir}"])
    replicate = load_config("smoke", [f"data.dir={tiny_data_dir}", "seed=3"])
    # Run seed 0 is the seeds as written: hashes made before the run seed was read stay valid.
    assert with_run_seed(base) is base
    assert stages.stage_hashes(replicate) != stages.stage_hashes(base)
    assert stages.stage_hashes(replicate) == stages.stage_hashes(with_run_seed(replicate))
    # Each seeded stage's own key changes, not only through the generator it follows.
    only_sampling = load_config("smoke", [f"data.dir={tiny_data_dir}", "seed=3", "finetune.seed=-1"])
    fixed_ft = load_config("smoke", [f"data.dir={tiny_data_dir}",
                                     f"finetune.seed={with_run_seed(only_sampling).finetune.seed}"])
    assert stages.stage_hashes(only_sampling)["finetune"] == stages.stage_hashes(fixed_ft)["finetune"]
    assert changed(only_sampling, fixed_ft) == set(stages.STAGE_NAMES) - {"finetune", "sample-test-greedy"}

    seen = []
    monkeypatch.setattr("gsmv.train.finetune.main", lambda c: seen.append(c))
    out = load_config("smoke", [f"data.dir={tiny_data_dir}", "seed=3", f"out_dir={tmp_path}"])
    pipeline.run(out, until="finetune", log=lambda _: None)
    assert [c.finetune.seed for c in seen] == [with_run_seed(out).finetune.seed]
    assert seen[0].finetune.seed != out.finetune.seed


def test_shipped_presets_keep_their_stage_hashes():
    """A golden list (tests/assets/stage_hashes.json, written when the hashes were last meant to change): a code
    change that moves a preset's stage hash would silently redo every user's run folder of that preset."""
    import json

    from gsmv.stages import stage_hashes

    golden = json.loads((Path(__file__).parent / "assets" / "stage_hashes.json").read_text())
    assert len(golden) >= 15
    for preset, hashes in golden.items():
        research = RESEARCH_CONFIGS / f"{preset}.yaml"  # a one-experiment config: its commands name the file
        assert stage_hashes(load_config(research if research.is_file() else preset)) == hashes, preset
