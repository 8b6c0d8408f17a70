from pathlib import Path

import pytest

from gsmv.config import CONFIG_DIR, RunConfig, config_hash, load_config
from gsmv.errors import GsmvError

PRESETS = sorted(CONFIG_DIR.glob("*.yaml"))
# One-experiment configs (issue 38): not shipped, run with --config FILE; their commands in docs/research/ must work.
RESEARCH_DIR = Path(__file__).resolve().parents[1] / "docs" / "research" / "configs"
RESEARCH = sorted(RESEARCH_DIR.rglob("*.yaml"))


def test_presets_are_there():
    names = {p.stem for p in PRESETS}
    assert {"synth", "smoke", "smoke-synth", "gsm8k-cpu", "gpu-gpt2"} <= names
    assert len(RESEARCH) >= 20 and not names & {p.stem for p in RESEARCH}  # moved, not copied


@pytest.mark.parametrize("preset", PRESETS + RESEARCH, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_preset_and_research_config_loads_and_validates(preset: Path):
    cfg = load_config(preset)
    assert isinstance(cfg, RunConfig)
    if preset in PRESETS:
        assert cfg.name == preset.stem  # a run folder per preset: ablations never overwrite the main run


def test_every_config_has_its_own_run_folder():
    names = [load_config(p).name for p in PRESETS + RESEARCH]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_shipped_presets_load_by_name():
    for p in PRESETS:
        assert load_config(p.stem) == load_config(p)


def test_base_resolves_beside_the_file_first_then_among_the_presets(tmp_path):
    research = RESEARCH_DIR
    five = load_config(research / "synth-5m-lr1e3.yaml")  # base: synth-5m, a research config beside it
    assert five.model.name == "cpu-5m" and five.finetune.lr == 1e-3
    assert load_config(research / "synth-rank.yaml").sample == load_config("synth").sample  # base: a preset
    (tmp_path / "smoke.yaml").write_text("name: local\nsample:\n  n_test: 5\n")  # a sibling shadows the preset
    (tmp_path / "mine.yaml").write_text("base: smoke\nname: mine\n")
    assert load_config(tmp_path / "mine.yaml").sample.n_test == 5
    (tmp_path / "other.yaml").write_text("base: synth\nname: other\n")
    assert load_config(tmp_path / "other.yaml").model == load_config("synth").model


def test_a_moved_config_by_name_says_where_it_went(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(GsmvError, match=r"--config docs/research/configs/synth-rank.yaml"):
        load_config("synth-rank")


# gpu-smollm2 is issue 45's recipe (TinyGSM's setting), not the paper's: tested against its CPU config below.
@pytest.mark.parametrize("preset", [p for p in PRESETS if p.stem.startswith("gpu-") and p.stem != "gpu-smollm2"],
                         ids=lambda p: p.stem)
def test_hub_presets_use_the_papers_recipe(preset: Path):
    cfg = load_config(preset)
    assert cfg.finetune.dropout == 0.2 and cfg.verifier.dropout == 0.2  # residual dropout 0.2 (paper, Appendix E)
    assert cfg.verifier.init == "generator" and cfg.verifier.lm_data == "reference"
    assert cfg.sample.n_train == 100 and cfg.sample.n_test == 100 and cfg.sample.temperature == 0.7


def test_the_smollm2_gpu_preset_is_the_cpu_research_recipe_at_gpu_scale():
    gpu, cpu = load_config("gpu-smollm2"), load_config(RESEARCH_DIR / "synth-smol-gen.yaml")
    assert gpu.model.name == cpu.model.name == "smollm2-135m" and gpu.data.synth == cpu.data.synth
    for key in ("init", "head", "dropout", "level", "lm_ratio", "labels", "max_len"):
        assert getattr(gpu.verifier, key) == getattr(cpu.verifier, key), key
    assert gpu.finetune.lr == cpu.finetune.lr and gpu.finetune.dropout == cpu.finetune.dropout == 0.0
    # what a GPU affords: all train problems, two epochs, more samples, every verifier layer
    assert gpu.data.train_limit == 0 and gpu.finetune.epochs == 2 and gpu.verifier.train_layers == 0
    assert gpu.sample.n_train * gpu.sample.train_problems > cpu.sample.n_train * cpu.sample.train_problems


def test_base_chain_keeps_the_base_and_overrides_its_keys():
    cfg = load_config(RESEARCH_DIR / "gsm8k-cpu-solution.yaml")
    base = load_config("gsm8k-cpu")
    assert cfg.verifier.level == "solution" and base.verifier.level == "token"
    assert cfg.model == base.model and cfg.finetune == base.finetune and cfg.sample == base.sample


def test_dotted_overrides_are_typed():
    cfg = load_config("smoke", ["sample.n_test=3", "verifier.lm_weight=0", "report.compare=[a,b]"])
    assert cfg.sample.n_test == 3 and cfg.verifier.lm_weight == 0.0 and cfg.report.compare == ["a", "b"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("sample.nn=3", "unknown config key 'sample.nn': valid keys under sample are backend"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("sample.n_test=abc", "config key 'sample.n_test'"),
        ("verifier.level=word", "valid choices are token, solution"),
        ("sample.top_p=0", "'sample.top_p' must be in (0, 1]"),
        ("finetune.dropout=1.5", "'finetune.dropout' must be in [0, 1)"),
        ("novalue", "is not of the form key=value"),
        # read by nothing, so removed (issue 11): a config that still sets it is told so
        ("score.problems_per_shard=4", "unknown config key 'score.problems_per_shard'"),
        ("verifier.rank_weight=-1", "'verifier.rank_weight' must be >= 0"),
    ],
)
def test_bad_overrides_give_one_clear_line(override, expected):
    with pytest.raises(GsmvError) as e:
        load_config("smoke", [override])
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample: [unclosed\n")
    with pytest.raises(GsmvError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("sample:\n  n_tset: 3\n")
    with pytest.raises(GsmvError, match=r"wrong.yaml: unknown config key 'sample.n_tset'"):
        load_config(wrong)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(GsmvError, match="smoke"):
        load_config("no-such-preset")


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(GsmvError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_config_hash_tracks_values():
    a, b = load_config("smoke"), load_config("smoke", ["verifier.dropout=0.1"])
    assert config_hash(a.verifier) != config_hash(b.verifier)
    assert config_hash(a.sample) == config_hash(b.sample)


def test_run_seed_mixes_into_every_stage_seed_but_data_and_bootstrap():
    from gsmv.config import with_run_seed

    cfg = load_config("synth", ["seed=7"])
    mixed = with_run_seed(cfg)
    for part in ("finetune", "sample", "verifier", "search"):
        assert getattr(mixed, part).seed != getattr(cfg, part).seed, part
    assert len({mixed.finetune.seed, mixed.sample.seed, mixed.verifier.seed, mixed.search.seed}) == 4
    assert mixed.data.synth.seed == cfg.data.synth.seed and mixed.data.val_seed == cfg.data.val_seed
    assert mixed.evaluate.seed == cfg.evaluate.seed
    assert with_run_seed(mixed) == mixed  # applying it twice changes nothing
    assert with_run_seed(load_config("synth", ["seed=8"])).sample.seed != mixed.sample.seed
    assert with_run_seed(load_config("synth", ["seed=-7"])).sample.seed != mixed.sample.seed
    assert cfg.seed == 7  # the config the user wrote (config.yaml) is left as it is


@pytest.mark.parametrize("override,expected", [
    ("data.synth.max_number=1", "'data.synth.max_number' is 1: must be >= 2"),
    ("data.synth.test_size=1000000000", "at most 5,000,000 problems"),
    ("threads=-3", "'threads' is -3: must be >= 0"),
    ("verifier.pack_tokens=-1", "'verifier.pack_tokens' must be >= 0"),
    ("verifier.group_samples=-2", "'verifier.group_samples' must be >= 0"),
    ("sample.n_test=100000", "'sample.n_test' is 100,000: at most 10,000 samples per problem"),
    ("sample.max_new_tokens=1000000", "at most 8,192 tokens a solution"),
    ("search.beams=[1,5000]", "distinct beam counts in 1..1,024"),
    ("search.expansions=100000", "at most 256 lines per beam"),
])
def test_knobs_out_of_range_are_refused_at_once(override, expected):
    with pytest.raises(GsmvError, match=expected.replace("(", r"\(")):
        load_config("smoke-synth", [override])


def test_speed_knobs_stay_out_of_the_hashes():
    from gsmv.config import hash_dict

    a, b = load_config("synth"), load_config("synth", ["verifier.pack_tokens=0"])
    assert hash_dict(a.verifier) == hash_dict(b.verifier)
    c = load_config("synth", ["verifier.group_samples=10"])
    assert hash_dict(c.verifier) != hash_dict(a.verifier) and "group_samples" not in hash_dict(a.verifier)


def test_fresh_lm_data_needs_a_task_that_draws_problems():
    assert load_config("smoke-synth", ["verifier.lm_data=fresh"]).verifier.lm_data == "fresh"
    with pytest.raises(GsmvError, match="'verifier.lm_data' is 'fresh'.*data.source=synth"):
        load_config(None, ["data.source=local", "verifier.lm_data=fresh"])
