"""gsmv.familiarity: which questions `gsmv solve` flags as unlike a run's training problems."""

from __future__ import annotations

from gsmv.config import load_config
from gsmv.familiarity import Familiarity, words

TRAIN = ["Tess keeps 17 postcards at home.", "Pia has 8 postcards less than Tess. How many postcards does Pia have?"]


def test_words_are_letters_only_and_lower_case():
    assert words("Pia's 3 POSTCARDS, 4.5 kg; née") == ["pia", "s", "postcards", "kg", "née"]


def test_the_threshold_is_the_largest_unseen_share_of_the_val_questions():
    strict = Familiarity.of(TRAIN, ["Tess has 4 postcards."], "t")
    assert strict.threshold == 0.0 and strict.vocabulary >= {"tess", "postcards", "pia"}
    assert not strict.check("How many postcards does Tess have? 12 * 7").unlike_training  # numbers are free
    c = strict.check("What is the capital of France?")
    assert c.unlike_training and c.unseen_words == ["what", "is", "the", "capital", "of", "france"]
    # A val question with one new word in five lets through questions at most that unfamiliar.
    loose = Familiarity.of(TRAIN, ["Pia keeps 4 stamps at home."], "t")
    assert loose.threshold == 0.2
    assert not loose.check("Tess keeps 9 stamps at home.").unlike_training  # 1 of 5 words new
    assert loose.check("Tess keeps 9 red stamps at home.").unlike_training  # 2 of 6
    assert not Familiarity.of(TRAIN, [], "t").check("").unlike_training  # no val, no words: nothing to flag


def test_a_run_folder_without_its_data_has_no_check(tmp_path):
    assert Familiarity.of_run(tmp_path, load_config("smoke-synth")) is None


def test_from_a_run_folder_train_and_val_are_split_as_the_run_split_them(tmp_path):
    from gsmv.data.tasks import load_split, record_data

    cfg = load_config("smoke-synth", [f"out_dir={tmp_path}"])
    record_data(cfg, tmp_path / "data")
    fam = Familiarity.of_run(tmp_path, cfg)
    assert (fam.train_questions, fam.val_questions, fam.task) == (220, 20, "synthetic (data.synth)")
    assert fam.vocabulary == frozenset(w for p in load_split(cfg, "train") for w in words(p.question))
