"""`gsmv config`: every key, its value and its help, from the config dataclasses."""

from gsmv.config import load_config


def test_describe_lists_every_key_as_an_override_that_loads_back():
    from gsmv.config_doc import describe

    cfg = load_config("synth")
    lines = describe(cfg).splitlines()
    overrides = [line.split("  # ")[0] for line in lines]
    assert len(overrides) == len(set(o.split("=")[0] for o in overrides))  # one line a key
    again = load_config("synth", overrides)
    assert again == cfg  # every value printed is the value the config holds
    by_key = {line.split("=")[0]: line for line in lines}
    assert "train problems sampled for the verifier's data" in by_key["sample.train_problems"].lower()  # block above
    assert by_key["verifier.level"].endswith("# token (value after every solution token) | solution (final token only)")
    assert "[speed only" in by_key["verifier.pack_tokens"] and "[cadence" in by_key["verifier.save_every"]


def test_gsmv_config_prints_the_resolved_keys(capsys):
    from gsmv import cli

    assert cli.main(["config", "--config", "smoke", "sample.n_test=7"]) == 0
    assert "sample.n_test=7  # samples per test problem" in capsys.readouterr().out
