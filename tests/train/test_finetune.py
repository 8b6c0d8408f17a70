import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from crash import Killed, kill_at
from safetensors.torch import load_file

from gsmv.artifacts import RunPaths, read_metrics
from gsmv.data.gsm8k import Problem
from gsmv.errors import GsmvError
from gsmv.models.loading import load_model_and_tokenizer
from gsmv.train import finetune
from gsmv.train.finetune import encode_problems

REPO = Path(__file__).resolve().parents[2]


def _with(cfg, **kw):
    for key, value in kw.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_finetune_preset_learns_and_writes_loadable_generator(tiny_cfg):
    cfg = _with(tiny_cfg, finetune__epochs=3.0)
    finetune.main(cfg)
    paths = RunPaths(cfg.run_dir)
    recs = read_metrics(paths.metrics, "finetune")
    train = [r["loss"] for r in recs if "loss" in r]
    val = [r["val_loss"] for r in recs if "val_loss" in r and "event" not in r]
    assert train[-1] < train[0] - 1.0
    assert len(val) == 3 and val[-1] < val[0]
    model, tok = load_model_and_tokenizer(paths.generator_final, dtype=torch.float32, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 64
    s = "Tom has 4+5 = <<4+5=9>>9 pens.\n#### 9"
    assert tok.decode(tok.encode(s)) == s
    assert (paths.tokenizer / "tokenizer.json").is_file()
    # The trained model prefers the reference solution to a corrupted one.
    prompt = tok.encode("Raj has 5 boxes with 3 coins in each. How many coins are there?\n")

    def nll(text):
        ids = torch.tensor([prompt + tok.encode(text)])
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        with torch.no_grad():
            return float(model(input_ids=ids, labels=labels).loss)

    assert nll("There are 5*3 = <<5*3=15>>15 coins.\n#### 15") < nll("coins #### = There <<15 5*3>> are.\n15")

    # A second call finds generator/final for this config and does nothing.
    n_starts = sum(r.get("event") == "start" for r in recs)
    finetune.main(cfg)
    assert sum(r.get("event") == "start" for r in read_metrics(paths.metrics, "finetune")) == n_starts


def test_finetune_pretrained_gpt2_folder(tiny_cfg, tiny_gpt2_dir):
    cfg = _with(tiny_cfg, model__name=str(tiny_gpt2_dir), finetune__dropout=0.1)
    finetune.main(cfg)
    paths = RunPaths(cfg.run_dir)
    assert not paths.tokenizer.exists()  # pretrained models keep their own tokenizer
    model, tok = load_model_and_tokenizer(paths.generator_final, dtype=torch.float32, device="cpu")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert tok.pad_token_id == tok.eos_token_id
    start = load_file(Path(tiny_gpt2_dir) / "model.safetensors")
    end = load_file(paths.generator_final / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)


def test_kill_and_resume_equals_uninterrupted(tiny_cfg, tmp_path):
    cfg = _with(tiny_cfg, finetune__epochs=2.0, finetune__save_every=4, finetune__dropout=0.1)
    cfg.name = "full"
    finetune.main(cfg)

    kill = kill_at(10)
    cfg.name = "killed"
    with pytest.raises(Killed):
        finetune.main(cfg, on_step=kill)
    assert not RunPaths(cfg.run_dir).generator_final.exists()
    finetune.main(cfg)
    a = load_file(tmp_path / "full" / "generator" / "final" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "generator" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    starts = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl", "finetune") if r.get("event") == "start"]
    assert starts[-1]["resumed_from"].endswith("step-000008")

    # Changing a training setting makes the old checkpoints unusable: refused, not mixed.
    cfg.name = "killed2"
    with pytest.raises(Killed):
        finetune.main(cfg, on_step=kill)
    cfg.finetune.lr = 1e-4
    with pytest.raises(GsmvError, match=r"killed2/generator/step-000008: checkpoint was made with another config"):
        finetune.main(cfg)


def test_loss_mask_and_truncation(tiny_tokenizer):
    p = Problem(id="train-00000", question="Q is 1+1?", solution="1+1 = <<1+1=2>>2\n#### 2", answer="2")
    (ex,), n = encode_problems(tiny_tokenizer, [p], max_len=200, loss_on_prompt=False)
    prompt_len = len(tiny_tokenizer.encode("Q is 1+1?\n"))
    assert n == 0 and ex["labels"][:prompt_len] == [-100] * prompt_len
    assert ex["labels"][prompt_len:] == ex["input_ids"][prompt_len:]
    assert ex["input_ids"][-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ex["input_ids"][prompt_len:-1]) == p.solution
    (ex2,), _ = encode_problems(tiny_tokenizer, [p], max_len=200, loss_on_prompt=True)
    assert ex2["labels"] == ex2["input_ids"]
    (ex3,), n = encode_problems(tiny_tokenizer, [p], max_len=prompt_len + 2, loss_on_prompt=False)
    assert n == 1 and len(ex3["input_ids"]) == prompt_len + 2
    assert encode_problems(tiny_tokenizer, [p], max_len=prompt_len, loss_on_prompt=False) == ([], 1)


def test_existing_tokenizer_from_another_vocab_is_refused(tiny_cfg):
    cfg = _with(tiny_cfg, finetune__epochs=0.2)
    finetune.main(cfg)
    cfg.model.vocab_size = 320
    with pytest.raises(GsmvError, match="tokenizer was trained with"):
        finetune.main(cfg)


DDP_SCRIPT = """
import hashlib, sys
from gsmv.config import load_config
from gsmv.train import finetune, loop
from accelerate import PartialState

real_fit = loop.fit
def fit_and_hash(**kw):
    res = real_fit(**kw)
    h = hashlib.sha256()
    for k, v in sorted(kw["model"].state_dict().items()):
        h.update(k.encode()); h.update(v.detach().cpu().numpy().tobytes())
    rank = PartialState().process_index
    open(f"{sys.argv[1]}/rank{rank}.txt", "w").write(f"{PartialState().num_processes} {h.hexdigest()}")
    return res
finetune.fit = fit_and_hash
finetune.main(load_config(sys.argv[2]))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_gives_identical_weights(tiny_cfg, tmp_path):
    from gsmv.config import to_yaml

    cfg = _with(tiny_cfg, finetune__epochs=1.0, finetune__dropout=0.1, finetune__save_every=3)
    (tmp_path / "cfg.yaml").write_text(to_yaml(cfg))
    (tmp_path / "script.py").write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / "cpu_ddp.yaml"), "--main_process_port", str(_free_port()),
           str(tmp_path / "script.py"), str(tmp_path), str(tmp_path / "cfg.yaml")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0][0] == ranks[1][0] == "2"  # two processes really ran
    assert ranks[0][1] == ranks[1][1]  # and ended with the same weights
    paths = RunPaths(cfg.run_dir)
    start = next(r for r in read_metrics(paths.metrics, "finetune") if r.get("event") == "start")
    assert start["processes"] == 2
    model, _ = load_model_and_tokenizer(paths.generator_final, dtype=torch.float32, device="cpu")
    state = json.loads((paths.generator_final / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["complete"]
    assert model.config.hidden_size == 64


def test_extra_problems_join_the_training_data_but_not_the_tokenizer_or_splits(tmp_path):
    from tiny_overrides import TINY_OVERRIDES

    from gsmv.config import load_config
    from gsmv.data.tasks import load_split

    def cfg(name, *more):
        return load_config("smoke-synth", [f"out_dir={tmp_path}", f"name={name}", *TINY_OVERRIDES,
                                           "finetune.epochs=0.1", "finetune.max_len=1024", *more])

    base, extra = cfg("base"), cfg("extra", "finetune.extra_problems=300")
    finetune.main(base)
    finetune.main(extra)

    def examples(c):
        return next(r["examples"] for r in read_metrics(RunPaths(c.run_dir).metrics, "finetune") if r.get("event") == "start")

    assert examples(extra) == examples(base) + 300
    # Same vocabulary (trained on the train split alone) and the same splits: a verifier may start from either.
    tok_files = [RunPaths(c.run_dir).tokenizer / "tokenizer.json" for c in (base, extra)]
    assert tok_files[0].read_bytes() == tok_files[1].read_bytes()
    for split in ("train", "val", "test"):
        assert load_split(base, split) == load_split(extra, split)


def test_extra_problems_need_the_synth_task():
    from gsmv.config import load_config

    with pytest.raises(GsmvError, match="finetune.extra_problems"):
        load_config("smoke", ["finetune.extra_problems=10"])
    with pytest.raises(GsmvError, match="finetune.extra_problems"):
        load_config("smoke-synth", ["finetune.extra_problems=-1"])
