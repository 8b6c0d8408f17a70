import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from gsmv.errors import GsmvError
from gsmv.models.tokenizer import (
    EOS_TOKEN,
    PAD_TOKEN,
    VALUE_TOKEN,
    check_tokenizer,
    encode_prompt,
    encode_solution,
    train_tokenizer,
    value_token_id,
)

GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k"
TRICKY = [
    "There are 5*3 = <<5*3=15>>15 coins.\n#### 15",
    "  leading spaces, trailing spaces  \n\n\ttabs\r\n",
    "Janet’s ducks lay 16 eggs… she sells them for €2 each — 日本語 🦆",
    "",
    "<<<<==>>>>####=#####",
    "1234567890 0.25 -7 1,000,000",
]


def test_round_trip_tricky_text(tiny_tokenizer):
    for s in TRICKY:
        assert tiny_tokenizer.decode(tiny_tokenizer.encode(s)) == s


def test_digits_and_structure_tokens_are_single(tiny_tokenizer):
    tokens = tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer.encode("cost 1234 = <<12*3=36>>36.\n#### 36"))
    for t in ("<<", ">>", "=", "####"):
        assert t in tokens
    for d in "12346":
        assert d in tokens
    # No token holds two digits, or a digit glued to anything else.
    for t in tokens:
        if any(c.isdigit() for c in t):
            assert len(t) == 1, t
    # `=` right after an expression and `<<` after a space stay separate (the calculator's cue).
    assert tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer.encode("<<5*3="))[-1] == "="


def test_special_tokens_and_no_bos(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    ids = {tok.eos_token_id, tok.pad_token_id, value_token_id(tok)}
    assert None not in ids and len(ids) == 3
    assert tok.encode("abc")[0] != tok.eos_token_id
    assert tok.encode("abc") == tok.encode("abc", add_special_tokens=False)
    # Special tokens are atomic and skipped on request.
    assert tok.encode(VALUE_TOKEN) == [value_token_id(tok)]
    assert tok.decode(tok.encode("hi") + [tok.eos_token_id], skip_special_tokens=True) == "hi"


def test_prompt_and_solution_encoding(tiny_tokenizer):
    ids = encode_solution(tiny_tokenizer, "#### 7")
    assert ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ids[:-1]) == "#### 7"
    assert encode_prompt(tiny_tokenizer, "Q?\n") == tiny_tokenizer.encode("Q?\n")


def test_save_and_reload(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    s = TRICKY[0]
    assert tok.encode(s) == tiny_tokenizer.encode(s)
    assert tok.decode(tok.encode(s)) == s
    assert (tok.eos_token, tok.pad_token) == (EOS_TOKEN, PAD_TOKEN)
    assert value_token_id(tok) == value_token_id(tiny_tokenizer)


def test_vocab_size_respected_and_too_small_rejected():
    texts = ["the cat sat on the mat " * 3, "the dog 12 = <<3*4=12>>12"] * 20
    tok = train_tokenizer(texts, 280)
    assert len(tok) <= 280
    with pytest.raises(GsmvError, match="vocab_size"):
        train_tokenizer(texts, 100)


def test_check_tokenizer(tiny_gpt2_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_gpt2_tokenizer)
    assert tok.pad_token is None
    check_tokenizer(tok)
    assert tok.pad_token_id == tok.eos_token_id
    tok.eos_token = None
    with pytest.raises(GsmvError, match="EOS"):
        check_tokenizer(tok)
    with pytest.raises(GsmvError):
        check_tokenizer(object())


@pytest.mark.skipif(not (GSM8K / "train.jsonl").is_file(), reason="GSM8K not available")
def test_exact_round_trip_on_all_of_gsm8k():
    texts = []
    for split in ("train", "test"):
        for line in (GSM8K / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            texts += [rec["question"] + "\n", rec["answer"]]
    tok = train_tokenizer(texts[:4000], 1024)
    enc = tok(texts, add_special_tokens=True)["input_ids"]
    bad = [t for t, ids in zip(texts, enc, strict=True) if tok.decode(ids) != t]
    assert not bad, bad[:2]
    # Digits never merge, so the calculator's forced result tokenizes as in training text.
    tokens = {t for ids in enc[:2000] for t in tok.convert_ids_to_tokens(ids)}
    assert all(len(t) == 1 for t in tokens if any(c.isdigit() for c in t))
