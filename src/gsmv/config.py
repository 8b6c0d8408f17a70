"""Typed run configuration: one dataclass per stage, nested in RunConfig.

YAML presets and dotted command-line overrides are merged onto the dataclass
schema with OmegaConf, which rejects unknown keys and wrong types; we turn its
errors into one line that names the key and the valid choices.

What a result depends on is read from the fields themselves (`hash_dict`): a field is in every hash unless
its metadata says otherwise (`speed_only`, `cadence`, `added_later`), so no stage keeps its own list of keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf  # noqa: F401 - MISSING re-exported for presets
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gsmv.data.synth import SynthSettings
from gsmv.errors import GsmvError


def speed_only(default: Any) -> Any:
    """A field that changes speed or memory, never results: in no hash (a run folder keeps its outputs)."""
    return field(default=default, metadata={"hash": "never"})


def cadence(default: Any) -> Any:
    """How often a trainer logs, validates or checkpoints: not in the training hash, so an interrupted run may
    resume with another value; in the stage hash, as it always was (runs made before keep their hashes)."""
    return field(default=default, metadata={"hash": "stage"})


def read_side(default: Any) -> Any:
    """How readers use a stage's stored outputs (not how the stage makes them): in no hash of the section's own
    stage, so changing it never redoes that stage; the stages that read it name it in their keys."""
    return field(default=default, metadata={"hash": "never"})


def added_later(default: Any) -> Any:
    """A field added after runs were made, whose default means "as before": left out of the hashes while it
    keeps that default, so those runs keep their stage hashes."""
    return field(default=default, metadata={"as_before": default})


@dataclass
class SynthConfig(SynthSettings):
    """The synthetic GSM-style task (data.source=synth): sizes, seed and the difficulty knobs of SynthSettings."""

    train_size: int = 20000  # problems generated for train; data.val_size of them become the val split
    test_size: int = 500
    seed: int = 0
    # A harder test split to measure generalization: test problems get these many operations (0 = as train).
    test_min_steps: int = 0
    test_max_steps: int = 0


@dataclass
class DataConfig:
    # auto: a local GSM8K folder if one is found (data.dir, $GSMV_DATA_DIR, ../shared/data/gsm8k), else the
    # Hugging Face hub; local: that folder only; hf: the hub only (`openai/gsm8k` through `datasets`);
    # synth: the synthetic task generated from data.synth (no download).
    source: str = "auto"
    # Folder of GSM8K-format jsonl (train.jsonl, test.jsonl). Empty: $GSMV_DATA_DIR, else ../shared/data/gsm8k.
    dir: str = ""
    synth: SynthConfig = field(default_factory=SynthConfig)
    val_size: int = 500  # problems carved from train, seeded; all model selection uses them
    val_seed: int = 1234
    # Use only the first K problems of each split (0 = all); for smoke runs and tests.
    train_limit: int = 0
    val_limit: int = 0
    test_limit: int = 0


@dataclass
class ModelConfig:
    # A from-scratch preset name (see gsmv.models.loading.PRESETS), a hub id, or a local folder.
    name: str = "cpu-1m"
    dtype: str = "auto"  # auto (fp32 on CPU, bf16 on CUDA) | float32 | bfloat16 | float16
    # From-scratch presets only: BPE vocabulary trained on GSM8K train text.
    vocab_size: int = 2048
    # Optional overrides of the preset's architecture (0 = keep the preset's value).
    n_layer: int = 0
    n_embd: int = 0
    n_head: int = 0
    max_position: int = 0


@dataclass
class TrainConfig:
    """Optimisation settings shared by the generator and the verifier stages."""

    epochs: float = 2.0
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # cosine | linear | constant
    batch_size: int = 32  # sequences per device per micro-step
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    max_len: int = 384  # question + solution tokens; longer examples are truncated
    dropout: float = 0.0  # residual dropout on attention and MLP branch outputs
    seed: int = 0
    log_every: int = cadence(20)
    eval_every: int = cadence(0)  # steps between validation passes (0 = once per epoch)
    save_every: int = cadence(200)  # steps between resumable checkpoints (0 = epoch ends only)
    keep_checkpoints: int = cadence(2)


@dataclass
class FinetuneConfig(TrainConfig):
    loss_on_prompt: bool = False  # also train on question tokens (the released code's loss_on_prefix)
    # Beyond the paper (synth only): reference solutions of this many newly drawn problems of the train
    # distribution (none of them a train, val or test question) join the generator's training data. A stronger
    # generator on the same splits, tokenizer and verifier problems as a run without them: the synth
    # generator is data-limited, so this is how the generator-strength grid makes its stronger generators.
    extra_problems: int = added_later(0)
    # What of a pretrained generator trains (0 = all of it, the paper). train_layers=k: the top k decoder
    # layers and the final norm; the embeddings and lower layers stay as loaded (no backward below them).
    train_layers: int = added_later(0)
    # LoRA (peft, gsmv's extra 'lora') of this rank on the decoder's linear layers (Llama/Qwen2/Mistral's
    # q/k/v/o and MLP projections, GPT-2's attention and MLP), instead of training
    # its weights. Every model folder written (checkpoints and generator/final) holds the merged weights: a
    # plain transformers model, as sampling, export and every reader expect.
    lora_rank: int = added_later(0)
    lora_alpha: float = added_later(16.0)  # LoRA's update is scaled by lora_alpha / lora_rank


@dataclass
class SampleConfig:
    backend: str = "hf"  # hf | vllm
    n_train: int = 4  # samples per train problem: the verifier's training data
    # Train problems sampled for the verifier's data (the first K of train; 0 = all, as the paper). The
    # generator and the verifier's LM objective still use every train problem.
    train_problems: int = 0
    n_val: int = 8  # samples per val problem: verifier validation and model selection
    n_test: int = 100  # samples per test problem: best-of-N at test time
    greedy_test: bool = True  # one extra greedy (T=0) sample per test problem for test@1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    # Rows decoded together. 1024 rather than 256: each step's weight matmuls and per-op overheads are shared by
    # 4x the rows (BENCHMARKS.md, bench_sample_stage.py). Samples are seeded per problem and sample, so it does
    # not change them.
    batch_size: int = speed_only(1024)
    problems_per_shard: int = 64
    calculator: bool = True
    seed: int = 0
    # vLLM only
    gpu_memory_utilization: float = speed_only(0.85)


@dataclass
class VerifierConfig(TrainConfig):
    epochs: float = 1.0
    dropout: float = 0.2
    level: str = "token"  # token (value after every solution token) | solution (final token only)
    head: str = "token"  # token (paper: gain and bias on a reserved token's logit) | linear
    loss: str = "mse"  # mse (paper) | bce
    lm_weight: float = 1.0  # weight of the joint LM loss (0 turns it off)
    # What the joint LM loss trains on. reference (paper, Appendix E): the original training solutions, mixed
    # with the verifier data (lm_ratio LM examples per verifier example; the paper mixes in equal measure,
    # which upsamples the solutions ~100x). samples: the generator's own samples (the value examples).
    # fresh (beyond the paper; synth only): reference solutions of newly drawn problems of the train
    # distribution, none of them a train, val or test problem, as many as there are LM examples (none repeats):
    # the look-up skill a step check needs, grown without limit.
    lm_data: str = "reference"
    lm_ratio: float = 1.0
    # What the value is trained to predict. outcome (paper): the final answer's correctness at every token.
    # process: step-level truth (tasks that have it, e.g. synth): 1 until the first wrong step, 0 from it on.
    labels: str = "outcome"
    # Beyond the paper: weight of a within-problem ranking loss, added to the value loss. For every pair of one
    # problem's samples in a batch, one right and one wrong, softplus(z_wrong - z_right) on the logits of their
    # final values (what best-of-N ranks by). Batches then hold whole problems' samples (no length bucketing).
    # The paper's losses teach the verifier which problems are hard as much as which sample is right; this one
    # rewards only the second. 0 (default) = the paper.
    rank_weight: float = added_later(0.0)
    # generator (paper, Appendix E: "we initialize our verifiers from their corresponding generators") |
    # base: cfg.model.name (a hub model or folder; for from-scratch presets a fresh random model) |
    # any causal LM (a model folder such as another run's generator/final, a hub id, or a packaged model such as
    # smollm2-135m, gsmv.models.sources): a verifier of another size or family than the generator, as in the
    # paper's generator/verifier size comparison. One that shares the generator's vocabulary reads the samples'
    # token ids; any other reads their text with its own tokenizer. The stage hash sees the name, not the weights.
    init: str = "generator"
    # The reserved token whose logit the "token" head reads; added to the vocabulary when a tokenizer
    # (a hub model's) lacks it, so the head always starts from a row of the LM's own unembedding.
    value_token: str = "<|value|>"
    # Beyond the paper: a batch holds up to this many samples of each problem it draws, laid out together
    # (0 = examples shuffled one by one). With packing, one problem's samples read its question once.
    group_samples: int = added_later(0)
    # Beyond the paper: train only the top K decoder layers, the final norm and the value head (0 = all
    # layers, the paper). The embeddings and lower layers stay as the init has them, so a large pretrained
    # verifier trains at a fraction of full fine-tuning's cost (no backward below layer K from the top, no
    # optimizer state for the frozen weights).
    train_layers: int = added_later(0)
    # Shared-prompt packing (gsmv.train.packing) into rows of at most this many tokens; 0 = one example a row,
    # padded (for models whose attention takes no 4D mask). Same losses, so speed only.
    pack_tokens: int = speed_only(256)


@dataclass
class ScoreConfig:
    batch_size: int = 64
    keep_token_values: bool = True
    # How a sample's score is read from the verifier's values (gsmv.steps): last (the value at the final token,
    # the paper's) | min | product | mean, over the values at the ends of its `<<expr=result>>` steps and at the
    # final token. Evaluate's best-of-N and top-k voting, `gsmv solve` and `gsmv search` rank by it; anything but
    # last needs the per-token values (keep_token_values) of a verifier that reads the generator's tokens.
    aggregate: str = read_side("last")


@dataclass
class SearchConfig:
    """Value-guided step-level search at test time (gsmv.search), run for each beam count in `beams`."""

    # Whether `gsmv run` runs the stage, not what it computes (`gsmv search` runs it either way): in no hash.
    enabled: bool = speed_only(False)
    beams: list[int] = field(default_factory=lambda: [1, 2, 4])  # K values to compare
    expansions: int = 4  # M: next lines per open beam (K·M from the empty solution)
    max_steps: int = 12  # solution lines at most
    step_tokens: int = 64  # tokens per line at most (sample.max_new_tokens bounds the whole solution)
    temperature: float = 0.7
    top_p: float = 1.0
    pick: str = "value"  # value (the best ended beam) | vote (the answer most ended beams give)
    seed: int = 0
    problems: int = 0  # the first P test problems (0 = all): search costs more per problem than sampling
    problems_per_shard: int = 16
    batch_size: int = speed_only(256)  # sampler rows decoded together


@dataclass
class EvaluateConfig:
    bootstrap: int = 1000  # resamples of problems for 95% confidence intervals
    seed: int = 0


@dataclass
class ReportConfig:
    compare: list[str] = field(default_factory=list)  # other run folders for the comparison figure
    html_problems: int = 300  # test problems shown in report.html (0 = all)
    # Samples per problem shown in full in report.html (verifier's top ones, plus the best-ranked correct one);
    # the rest are listed as answer/score rows only, to keep the file small.
    html_samples: int = 10


@dataclass
class RunConfig:
    name: str = "run"
    out_dir: str = "runs"  # the run folder is out_dir/name
    # A replicate of the whole run: mixed into the seeds of finetune, sample, verifier and search (model init,
    # data order, dropout, samples), so seed=1 repeats the experiment with new randomness. The data (synth.seed,
    # val_seed) and the bootstrap (evaluate.seed) keep theirs, so replicates are compared on the same problems.
    # 0 leaves every stage's seed as written. See with_run_seed.
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch's default)
    # Another run folder whose finished stages are linked instead of redone when their config hash matches
    # (ablations that change only the verifier share the generator and the samples).
    reuse_from: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# Enumerated string fields: checked here because OmegaConf types them only as str.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": ("auto", "local", "hf", "synth"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "finetune.schedule": ("cosine", "linear", "constant"),
    "verifier.schedule": ("cosine", "linear", "constant"),
    "sample.backend": ("hf", "vllm"),
    "verifier.level": ("token", "solution"),
    "verifier.head": ("token", "linear"),
    "verifier.loss": ("mse", "bce"),
    "verifier.lm_data": ("reference", "samples", "fresh"),
    "verifier.labels": ("outcome", "process"),
    "search.pick": ("value", "vote"),
    "score.aggregate": ("last", "min", "product", "mean"),
    "device": ("auto", "cpu", "cuda"),
}

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: presets ship with the package
RESEARCH_CONFIG_DIR = Path("docs/research/configs")  # relative: a repository checkout, not the package


def _valid_keys(node: Any) -> list[str]:
    return sorted(str(k) for k in node.keys()) if OmegaConf.is_dict(node) else []


def _key_error(schema: Any, full_key: str) -> GsmvError:
    parts = full_key.split(".")
    node = schema
    for i, p in enumerate(parts):
        if OmegaConf.is_dict(node) and p in node:
            node = node[p]
            continue
        where = ".".join(parts[:i]) or "the top level"
        return GsmvError(f"unknown config key '{full_key}': valid keys under {where} are {', '.join(_valid_keys(node))}")
    return GsmvError(f"bad config key '{full_key}'")


MAX_SYNTH_PROBLEMS = 5_000_000
# Upper bounds of the knobs that set an amount of work, checked before any work starts. The paper samples 100
# per problem; evaluate holds every test sample's answer and score in memory ([problems, N] arrays: 1,319 x
# 3,200 took 1.8 GiB, BENCHMARKS.md), and gsmv solve has the same bound on --n.
WORK_LIMITS: dict[str, tuple[int, str]] = {
    "sample.n_train": (10_000, "samples per problem"),
    "sample.n_val": (10_000, "samples per problem"),
    "sample.n_test": (10_000, "samples per problem (evaluate holds them all in memory)"),
    "sample.max_new_tokens": (8_192, "tokens a solution (GSM8K's are under 400; the KV cache grows with it)"),
    "search.expansions": (256, "lines per beam"),
    "search.max_steps": (256, "solution lines"),
    "search.step_tokens": (8_192, "tokens a line"),
}
MAX_BEAMS = 1_024


def _fail(key: str, value: Any, must: str) -> GsmvError:
    return GsmvError(f"config key '{key}' is {value}: it must be {must}")


def _check(cfg: RunConfig) -> None:
    """Every check of a loaded config that holds whatever stages run, one section at a time (the checks that
    depend on which stages run are check_for_stages')."""
    for key, choices in CHOICES.items():
        obj: Any = cfg
        for p in key.split("."):
            obj = getattr(obj, p)
        if obj not in choices:
            raise GsmvError(f"config key '{key}' is '{obj}': valid choices are {', '.join(choices)}")
    positive = ["sample.batch_size", "sample.max_new_tokens", "score.batch_size", "finetune.batch_size",
                "verifier.batch_size", "finetune.grad_accum", "verifier.grad_accum", "sample.problems_per_shard",
                "finetune.log_every", "verifier.log_every", "search.expansions", "search.max_steps",
                "search.step_tokens", "search.problems_per_shard", "search.batch_size"]
    for key in positive:
        sect, name = key.split(".")
        if getattr(getattr(cfg, sect), name) <= 0:
            raise GsmvError(f"config key '{key}' must be > 0")
    if cfg.threads < 0:
        raise GsmvError(f"config key 'threads' is {cfg.threads}: must be >= 0 (0 = torch's default)")
    for key, (limit, unit) in WORK_LIMITS.items():
        sect, name = key.split(".")
        if getattr(getattr(cfg, sect), name) > limit:
            raise GsmvError(f"config key '{key}' is {getattr(getattr(cfg, sect), name):,}: at most {limit:,} {unit}")
    _check_synth(cfg.data.synth)
    _check_finetune(cfg.finetune, cfg.data.source)
    _check_verifier(cfg.verifier, cfg.data.source)
    _check_sampling(cfg.sample, cfg.search)
    for sect in ("finetune", "verifier"):
        if not 0.0 <= getattr(cfg, sect).dropout < 1.0:
            raise GsmvError(f"config key '{sect}.dropout' must be in [0, 1)")


def _check_synth(sy: SynthConfig) -> None:
    for key in ("train_size", "test_size", "min_steps", "max_steps", "max_number", "max_factor"):
        if getattr(sy, key) <= 0:
            raise GsmvError(f"config key 'data.synth.{key}' must be > 0")
    for key in ("max_number", "max_factor"):  # numbers are drawn from [2, max]
        if getattr(sy, key) < 2:
            raise GsmvError(f"config key 'data.synth.{key}' is {getattr(sy, key)}: must be >= 2 (numbers are drawn "
                            "from [2, max])")
    for key in ("train_size", "test_size"):  # bounded work: generation is in memory, about 1 KB a problem
        if getattr(sy, key) > MAX_SYNTH_PROBLEMS:
            raise GsmvError(f"config key 'data.synth.{key}' is {getattr(sy, key):,}: at most {MAX_SYNTH_PROBLEMS:,} "
                            "problems (they are generated in memory, about 1 KB each)")
    if sy.min_steps > sy.max_steps or not 0 <= sy.min_distractors <= sy.max_distractors:
        raise GsmvError("config keys 'data.synth.min_steps/max_steps' and 'min_distractors/max_distractors' "
                        "must be ordered min <= max (distractors >= 0)")
    if sy.max_steps > 12 or sy.max_distractors > 6 or sy.test_max_steps > 12:
        raise GsmvError("config keys 'data.synth.*_steps' are at most 12 and 'max_distractors' at most 6")
    if (sy.test_min_steps > 0) != (sy.test_max_steps > 0) or sy.test_min_steps > sy.test_max_steps:
        raise GsmvError("config keys 'data.synth.test_min_steps/test_max_steps' are both 0 (as train) or "
                        "both > 0 with min <= max")
    for key in ("p_combine", "p_pack"):
        if not 0.0 <= getattr(sy, key) <= 1.0:
            raise GsmvError(f"config key 'data.synth.{key}' must be in [0, 1]")


def _check_finetune(ft: FinetuneConfig, source: str) -> None:
    for key in ("train_layers", "lora_rank"):
        if getattr(ft, key) < 0:
            raise GsmvError(f"config key 'finetune.{key}' must be >= 0 (0 = off)")
    if ft.train_layers and ft.lora_rank:
        raise GsmvError("config keys 'finetune.train_layers' and 'finetune.lora_rank' are both set: pick one way "
                        "to train part of the generator")
    if ft.lora_rank and ft.lora_alpha <= 0:
        raise GsmvError("config key 'finetune.lora_alpha' must be > 0")
    if ft.extra_problems < 0:
        raise GsmvError("config key 'finetune.extra_problems' must be >= 0 (0 = the train split only)")
    if ft.extra_problems and source != "synth":
        raise GsmvError("config key 'finetune.extra_problems' is set: extra problems need a task that draws new "
                        "problems (data.source=synth)")


def _check_verifier(v: VerifierConfig, source: str) -> None:
    if not str(v.init).strip():
        raise GsmvError("config key 'verifier.init' is empty: use generator, base or a model folder")
    if v.lm_ratio < 0:
        raise GsmvError("config key 'verifier.lm_ratio' must be >= 0")
    for key in ("group_samples", "pack_tokens", "train_layers"):
        if getattr(v, key) < 0:
            raise GsmvError(f"config key 'verifier.{key}' must be >= 0 (0 = off)")
    if v.rank_weight < 0:
        raise GsmvError("config key 'verifier.rank_weight' must be >= 0 (0 = no ranking loss, the paper)")
    if v.labels == "process" and source != "synth":
        raise GsmvError("config key 'verifier.labels' is 'process': step-level labels need a task with "
                        "step-level truth (data.source=synth)")
    if v.lm_data == "fresh" and source != "synth":
        raise GsmvError("config key 'verifier.lm_data' is 'fresh': fresh reference solutions need a task that "
                        "draws new problems (data.source=synth)")


def _check_sampling(sample: SampleConfig, search: SearchConfig) -> None:
    beams = list(search.beams)
    if not beams or any(k <= 0 or k > MAX_BEAMS for k in beams) or len(set(beams)) != len(beams):
        raise GsmvError(f"config key 'search.beams' is {beams}: it must list distinct beam counts in 1..{MAX_BEAMS:,}")
    if search.problems < 0:
        raise GsmvError("config key 'search.problems' must be >= 0 (0 = every test problem)")
    if search.temperature < 0 or not 0.0 < search.top_p <= 1.0:
        raise GsmvError("config keys 'search.temperature' >= 0 and 'search.top_p' in (0, 1] are required")
    if sample.temperature < 0:
        raise GsmvError("config key 'sample.temperature' must be >= 0")
    if not 0.0 < sample.top_p <= 1.0:
        raise GsmvError("config key 'sample.top_p' must be in (0, 1]")


def check_for_stages(cfg: RunConfig, names: list[str]) -> None:
    """Values that are wrong only for some stages (they would fail once an earlier stage has spent its time, or
    train nothing), checked for the stages about to run before anything is written."""
    sel = set(names)
    for sect, stage in (("finetune", "finetune"), ("verifier", "train-verifier")):
        if stage in sel:
            t = getattr(cfg, sect)
            for key, wrong, must in (("epochs", t.epochs <= 0, "> 0"), ("lr", t.lr < 0, ">= 0"),
                                     ("max_len", t.max_len <= 0, "> 0")):
                if wrong:
                    raise _fail(f"{sect}.{key}", getattr(t, key), must)
    if "score" in sel and cfg.verifier.max_len <= 0:  # the score stage cuts inputs at verifier.max_len
        raise _fail("verifier.max_len", cfg.verifier.max_len, "> 0")
    if "sample-train" in sel and cfg.sample.n_train <= 0:
        raise _fail("sample.n_train", cfg.sample.n_train, "> 0")
    if sel & {"sample-test", "score", "evaluate"} and cfg.sample.n_test <= 0:
        raise _fail("sample.n_test", cfg.sample.n_test, "> 0")


def resolve_preset(path_or_name: str) -> Path:
    """`configs/smoke.yaml`, `smoke.yaml` or `smoke` → the preset file."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{path_or_name}.yaml", Path("configs") / f"{path_or_name}.yaml"):
        if cand.is_file():
            return cand
    names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    # One-experiment configs left the package (issue 38); in a checkout, name the file an old command meant.
    research = RESEARCH_CONFIG_DIR / f"{path_or_name}.yaml"
    hint = f" (a research config: --config {research})" if research.is_file() else ""
    raise GsmvError(f"config '{path_or_name}' not found: give a YAML path or one of the presets "
                    f"{', '.join(names)}{hint}")


def _preset_chain(path_or_name: str, seen: tuple[Path, ...] = ()) -> list[tuple[Path, Any]]:
    """A preset and the presets it names with `base:` (loaded first, so the file's own keys win)."""
    yaml_path = resolve_preset(path_or_name)
    if yaml_path.resolve() in seen:
        raise GsmvError(f"{yaml_path}: 'base' chain loops back to itself")
    try:
        layer = OmegaConf.load(yaml_path)
    except Exception as e:  # noqa: BLE001 - yaml raises several error types
        raise GsmvError(f"{yaml_path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not OmegaConf.is_dict(layer):
        raise GsmvError(f"{yaml_path}: expected a mapping of config keys at the top level")
    base = layer.pop("base", None)
    if base:
        # A file beside this one first: research configs (docs/research/configs/) build on each other by name
        # and live outside the package; a name with no such sibling is a shipped preset.
        sibling = next((c for c in (yaml_path.parent / str(base), yaml_path.parent / f"{base}.yaml") if c.is_file()),
                       None)
        base = sibling or base
    chain = _preset_chain(str(base), (*seen, yaml_path.resolve())) if base else []
    return [*chain, (yaml_path, layer)]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Merge the schema, an optional YAML preset (and its `base:` chain) and `a.b=c` overrides; validate."""
    schema = OmegaConf.structured(RunConfig)
    layers: list[tuple[str, Any]] = []
    if path is not None:
        layers += [(str(p), layer) for p, layer in _preset_chain(str(path))]
    for o in overrides or []:
        if "=" not in o:
            raise GsmvError(f"override '{o}' is not of the form key=value (e.g. sample.n_test=8)")
    if overrides:
        layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    merged, where = schema, "defaults"
    try:
        for layer_where, layer in layers:
            where = layer_where
            merged = OmegaConf.merge(merged, layer)
        where = "config"
        cfg = OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        raise GsmvError(f"{where}: {_key_error(schema, e.full_key or str(e.key))}") from None
    except ValidationError as e:
        raise GsmvError(f"{where}: config key '{e.full_key}': {str(e.msg).splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise GsmvError(f"{where}: {str(e).splitlines()[0]}") from None
    assert isinstance(cfg, RunConfig)
    _check(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def hash_dict(section: Any, training: bool = False) -> dict:
    """What a stage hash (or, with `training`, a trainer's resume hash) sees of a config section: to_dict(section)
    without its speed_only fields, its added_later fields that keep their default, and for training its cadence
    fields. The one definition of which keys a result depends on."""
    values = to_dict(section)
    out = {}
    for f in fields(section):
        hashed = f.metadata.get("hash", "always")
        if hashed == "never" or (training and hashed == "stage"):
            continue
        if "as_before" in f.metadata and values[f.name] == f.metadata["as_before"]:
            continue
        out[f.name] = values[f.name]
    return out


def config_hash(*parts: Any) -> str:
    """A stable hash of config sections (dataclasses or plain values)."""
    blob = json.dumps([to_dict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def with_run_seed(cfg: RunConfig) -> RunConfig:
    """The config the stages run with: the run-level seed mixed into each stage's own seed (finetune, sample,
    verifier, search), and itself set to 0, so applying it twice changes nothing. A run seed of 0 returns cfg
    as it is, so runs made before the run seed was read keep their stage hashes and their results."""
    if cfg.seed == 0:
        return cfg

    def mix(stage_seed: int, stage: int) -> int:
        import numpy as np

        # SeedSequence wants non-negative entropy; Python's % keeps negative seeds distinct and in range. The
        # stage number keeps stages whose own seeds are equal (all 0 by default) from getting equal seeds.
        return int(np.random.SeedSequence([cfg.seed % 2**63, stage_seed % 2**63, stage]).generate_state(1)[0])

    return replace(cfg, seed=0, finetune=replace(cfg.finetune, seed=mix(cfg.finetune.seed, 1)),
                   sample=replace(cfg.sample, seed=mix(cfg.sample.seed, 2)),
                   verifier=replace(cfg.verifier, seed=mix(cfg.verifier.seed, 3)),
                   search=replace(cfg.search, seed=mix(cfg.search.seed, 4)))

