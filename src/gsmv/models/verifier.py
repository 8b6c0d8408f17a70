"""The verifier: a causal LM of the generator's architecture plus a scalar value head.

`Verifier.forward` returns, at every position, the probability that the solution
read so far ends up correct (the "value"), and optionally the LM's next-token
logits for the joint language-modelling loss.

Heads (cfg.verifier.head):

- "token" (the paper's): a learned gain and bias on the logit the LM's own
  unembedding gives one reserved token, `<|value|>`:
      value = sigmoid(gain * logit_value_token + bias)
  The paper describes the head as a gain and a bias that shift and scale the
  logit of a special vocabulary token, so the head starts from the LM and needs
  no new weight matrix. We add the sigmoid so that the value is a probability
  (MSE against a 0/1 label then cannot overshoot, and a BCE loss is available);
  the gain and bias are float32 scalars, set before training from the data
  (calibrate_head: the initial values sit at the label base rate instead of near 0,
  where a trained LM puts a token it never saw). Only the reserved token's row of the
  unembedding is evaluated, so reading values costs one dot product per
  position rather than a full vocabulary projection. Tokenizers without the
  token (hub models) get it added as a special token; the embedding matrix is
  resized only when the new id falls outside it (mean-initialised by
  transformers), so the head still starts from an unembedding row.
- "linear": an nn.Linear(hidden, 1) on the final hidden state, started from a logistic probe of the
  training data's hidden states (fit_linear_head); zero (value 0.5 everywhere) until then.

A verifier folder holds the LM (save_pretrained), its tokenizer, value_head.safetensors
and verifier_config.json; `load_verifier(path, dtype, device)` restores it in one call.

Known limit: the LM's logits are computed as `output_embeddings(final hidden)`, which
ignores model-specific logit post-processing (Gemma-2 soft-capping, Cohere's
logit_scale); Llama-, GPT-2-, Qwen- and Mistral-style models have none. The token head
reads one row of the unembedding weight directly: the weight is whole inside forward on one
device, under DDP, and under FSDP when the (tied) output layer sits in the root unit. Under
DeepSpeed ZeRO-3 it is an empty placeholder outside the output layer's own forward, so the head
then calls that layer (every token's logits) and takes the reserved token's column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gsmv.config import CHOICES, VerifierConfig
from gsmv.errors import GsmvError
from gsmv.progress import bar as progress_bar

HEADS = CHOICES["verifier.head"]
CONFIG_NAME = "verifier_config.json"
HEAD_NAME = "value_head.safetensors"
PROBE_L2 = (1e-3, 1e-2, 1e-1, 1.0)  # fit_linear_head's candidate L2 strengths (on standardised features)
DEFAULT_VALUE_TOKEN = VerifierConfig.value_token


@dataclass
class VerifierOutput:
    values: torch.Tensor  # (B, T) float32 probability of a correct solution after each position
    value_logits: torch.Tensor  # (B, T) float32, before the sigmoid
    logits: torch.Tensor | None  # (B, T, V) LM logits, (N, V) when a logits_mask or logits_index was given, or None


def _full_shape(weight: torch.Tensor) -> tuple[int, ...]:
    """A weight's shape, also when ZeRO-3 has replaced it by an empty placeholder (DeepSpeed keeps the real
    shape in ds_shape)."""
    return tuple(getattr(weight, "ds_shape", weight.shape))


class Verifier(nn.Module):
    """A Hugging Face causal LM with a value head (see the module docstring)."""

    def __init__(self, lm: nn.Module, head: str = "token", value_token_id: int | None = None,
                 tokenizer: Any = None):
        super().__init__()
        if head not in HEADS:
            raise GsmvError(f"verifier head '{head}': valid heads are {', '.join(HEADS)}")
        self.lm = lm
        self.head = head
        self.tokenizer = tokenizer  # saved alongside; not a module
        self.value_token_id = value_token_id
        # What it reads after the prompt (saved in verifier_config.json): "tokens", the generator's sampled ids
        # (it shares the generator's vocabulary), or "text", a sample's text encoded with its own tokenizer (a
        # verifier of another model family; see sample_solution_ids).
        self.reads = "tokens"
        shape = _full_shape(lm.get_output_embeddings().weight)
        if head == "token":
            n_out = shape[0]
            if value_token_id is None or not 0 <= value_token_id < n_out:
                raise GsmvError(f"verifier token head: value token id {value_token_id} is not in the "
                                f"LM's output vocabulary (size {n_out})")
            self.gain = nn.Parameter(torch.ones((), dtype=torch.float32))
            self.bias = nn.Parameter(torch.zeros((), dtype=torch.float32))
        else:
            hidden = shape[1]
            self.linear = nn.Linear(hidden, 1, dtype=torch.float32,
                                    device=lm.get_output_embeddings().weight.device)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    # -- forward -------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      cache: Any = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (after the last norm), the input of the unembedding. With `cache` (a
        transformers Cache holding earlier positions) the ids continue it, and it grows in place.
        attention_mask may be 4D (rows, 1, queries, keys; additive), as packed training rows are; they pass
        their own position_ids."""
        from gsmv.sampling.cache_utils import cache_kwarg

        base = self.lm.base_model  # the LM itself when it has no separate trunk
        kw = {cache_kwarg(base): cache, "use_cache": True} if cache is not None else {"use_cache": False}
        if position_ids is not None:
            kw["position_ids"] = position_ids
        if base is not self.lm:
            return base(input_ids=input_ids, attention_mask=attention_mask, **kw)[0]
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kw)
        return out.hidden_states[-1]

    def value_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.head == "linear":
            return self.linear(hidden.to(self.linear.weight.dtype)).float().squeeze(-1)
        return self.gain.float() * self._reserved_logit(hidden).float() + self.bias.float()

    def _reserved_logit(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM's logit of the reserved token: one row of the unembedding, not the whole projection."""
        emb = self.lm.get_output_embeddings()
        if emb.weight.numel() == 0:
            # Sharded (DeepSpeed ZeRO-3): a layer's weight is gathered only inside that layer's own forward and is
            # an empty placeholder outside it. Calling the layer gathers it, at the cost of every token's logit.
            return emb(hidden)[..., self.value_token_id]
        z = hidden @ emb.weight[self.value_token_id]
        if getattr(emb, "bias", None) is not None:
            z = z + emb.bias[self.value_token_id]
        return z

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.get_output_embeddings()(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                position_ids: torch.Tensor | None = None, return_logits: bool = True,
                logits_mask: torch.Tensor | None = None, logits_index: torch.Tensor | None = None) -> VerifierOutput:
        """Values at every position; LM logits everywhere (return_logits), only at the True
        positions of `logits_mask` or at the flat positions `logits_index` (row * width + column, repeats
        allowed), as (N, V): the joint loss needs them on solution tokens only; or not at all (scoring)."""
        hidden = self.hidden_states(input_ids, attention_mask, position_ids=position_ids)
        vl = self.value_logits(hidden)
        logits = None
        if logits_index is not None:
            logits = self.lm_logits(hidden.reshape(-1, hidden.shape[-1])[logits_index])
        elif logits_mask is not None:
            logits = self.lm_logits(hidden[logits_mask])
        elif return_logits:
            logits = self.lm_logits(hidden)
        return VerifierOutput(values=torch.sigmoid(vl), value_logits=vl, logits=logits)

    # -- head initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def calibrate_head(self, z: torch.Tensor, target_rate: float) -> None:
        """Token head: set gain and bias from reserved-token logits `z` seen on training data so
        that the initial values are centred on the label base rate (in logit space, clamped to
        [2%, 98%]) with a spread of at most 1 logit.

        A trained LM pushes the logit of a token it never saw far below the others, so with
        gain 1 and bias 0 every value starts near 0, where the sigmoid's gradient vanishes.
        Rescaling keeps the value a monotone function of the reserved token's logit."""
        if self.head != "token" or z.numel() == 0:
            return
        z = z.float()
        std = float(z.std()) if z.numel() > 1 else 1.0
        gain = 1.0 / max(std, 1.0)
        rate = min(max(target_rate, 0.02), 0.98)
        self.gain.fill_(gain)
        self.bias.fill_(math.log(rate / (1 - rate)) - gain * float(z.mean()))

    def fit_linear_head(self, h: torch.Tensor, y: torch.Tensor, sample: torch.Tensor) -> float:
        """Linear head: start from a logistic probe of final hidden states `h` (positions, hidden) on their
        labels `y`, each of the `sample` ids weighing the same however many positions it has (linear probing
        before fine-tuning, Kumar et al. 2022). A zero-initialised head passes no gradient into the LM until
        its weight grows, which at a pretrained model's lr takes hundreds of steps. The L2 strength is picked
        on a held-out half of the samples; returns it."""
        if self.head != "linear" or h.numel() == 0:
            return 0.0
        h, y = h.detach().float().cpu(), y.detach().float().cpu()
        sample = torch.unique(sample.cpu(), return_inverse=True)[1]
        n = int(sample.max()) + 1
        weight = (1.0 / torch.bincount(sample, minlength=n).float())[sample] / n  # each sample sums to 1/n
        mu, sd = h.mean(0), h.std(0).clamp_min(1e-6)
        x = (h - mu) / sd  # standardised: one L2 strength fits every backbone's hidden scale
        held = sample % 2 == 1
        best, best_loss = PROBE_L2[-1], math.inf
        if n >= 4:
            for l2 in PROBE_L2:
                w, b = _logistic_fit(x[~held], y[~held], weight[~held] / weight[~held].sum(), l2)
                loss = float(_weighted_bce(x[held] @ w + b, y[held], weight[held] / weight[held].sum()))
                if loss < best_loss:
                    best, best_loss = l2, loss
        w, b = _logistic_fit(x, y, weight, best)
        with torch.no_grad():
            self.linear.weight.copy_((w / sd).reshape(1, -1).to(self.linear.weight))
            self.linear.bias.fill_(float(b - (w * mu / sd).sum()))
        return best

    @torch.no_grad()
    def reserved_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM's logit of the reserved token at each position (before gain and bias)."""
        return self._reserved_logit(hidden).float()

    # -- scoring -------------------------------------------------------------------------------
    def score_sequences(self, sequences: Sequence[Sequence[int]], starts: Sequence[int], *, batch_size: int,
                        pad_id: int, max_len: int | None = None, progress: bool = False,
                        desc: str = "score", share_prompts: bool = False) -> list[tuple[float, np.ndarray]]:
        """(final value, values at positions starts[i]..end) for each sequence; see score_sequences."""
        return score_sequences(self, sequences, starts, batch_size=batch_size, pad_id=pad_id, max_len=max_len,
                               progress=progress, desc=desc, share_prompts=share_prompts)

    # -- persistence ---------------------------------------------------------------------------
    def head_state(self) -> dict[str, torch.Tensor]:
        if self.head == "token":
            return {"gain": self.gain.detach().float().cpu().reshape(1),
                    "bias": self.bias.detach().float().cpu().reshape(1)}
        return {"weight": self.linear.weight.detach().float().cpu().contiguous(),
                "bias": self.linear.bias.detach().float().cpu().contiguous()}

    @torch.no_grad()
    def load_head_state(self, state: dict[str, torch.Tensor], where: str = HEAD_NAME) -> None:
        try:
            if self.head == "token":
                self.gain.copy_(state["gain"].reshape(()))
                self.bias.copy_(state["bias"].reshape(()))
            else:
                self.linear.weight.copy_(state["weight"])
                self.linear.bias.copy_(state["bias"])
        except (KeyError, RuntimeError) as e:
            raise GsmvError(f"{where}: value head does not match a '{self.head}' head ({e})") from None

    def save_pretrained(self, folder: str | Path, tokenizer: Any = None,
                        state_dict: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> None:
        """LM + tokenizer (save_pretrained) + value_head.safetensors + verifier_config.json.

        `state_dict` (the Verifier's, e.g. gathered by accelerate under FSDP) overrides the live
        weights: "lm."-prefixed keys go to the LM, the rest is the head."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        head = self.head_state()
        if state_dict is not None:
            lm_sd = {k[3:]: v for k, v in state_dict.items() if k.startswith("lm.")}
            kwargs["state_dict"] = lm_sd
            names = {"gain": "gain", "bias": "bias"} if self.head == "token" else \
                {"linear.weight": "weight", "linear.bias": "bias"}
            for key, name in names.items():
                if key in state_dict:
                    head[name] = state_dict[key].detach().float().cpu().reshape(head[name].shape).contiguous()
        self.lm.save_pretrained(folder, **kwargs)
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is not None:
            tok.save_pretrained(folder)
        save_file(head, str(folder / HEAD_NAME))
        import gsmv
        from gsmv.model_card import PROMPT_FORMAT

        (folder / CONFIG_NAME).write_text(json.dumps(
            {"head": self.head, "value_token_id": self.value_token_id,
             "value_token": _token_string(tok, self.value_token_id), "prompt_format": PROMPT_FORMAT,
             "reads": self.reads, "vocabulary": vocabulary_hash(tok) if tok is not None else None,
             "gsmv_version": gsmv.__version__}, indent=2) + "\n")


@torch.inference_mode()
def score_sequences(model: nn.Module, sequences: Sequence[Sequence[int]], starts: Sequence[int], *,
                    batch_size: int, pad_id: int, max_len: int | None = None, min_batches: int = 0,
                    progress: bool = False, desc: str = "score",
                    share_prompts: bool = False) -> list[tuple[float, np.ndarray]]:
    """(final value, values at positions starts[i]..end) for each sequence, in input order.

    `model` is a Verifier or a wrapper of one (DDP, FSDP) called as model(ids, mask, return_logits=False).
    Batches are made of sequences of similar length (sorted, longest first) to cut padding.
    Sequences longer than max_len keep their last max_len tokens (the final token is where a
    solution is scored); values of solution tokens cut off that way are NaN. With min_batches,
    extra forward passes on a dummy row pad the count: wrapped models run collectives in forward,
    so every rank must make the same number of calls.

    share_prompts (a plain Verifier only): sequences with the same tokens before starts[i] (one
    problem's samples) read that prompt once; see _score_shared_prompts.
    """
    out: list[tuple[float, np.ndarray]] = [(float("nan"), np.zeros(0, np.float32))] * len(sequences)
    rest = range(len(sequences))
    if share_prompts:
        if not isinstance(model, Verifier):
            raise GsmvError("score_sequences: share_prompts needs a plain Verifier (not a wrapped one)")
        rest = _score_shared_prompts(model, sequences, starts, batch_size, max_len, out, progress, desc)
    device = next(model.parameters()).device
    order = sorted(rest, key=lambda i: -len(sequences[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress_bar(batches, desc=desc, disable=not progress, unit="batch"):
        rows, cuts = [], []
        for i in batch:
            seq = list(sequences[i])
            if not seq:
                raise GsmvError(f"score_sequences: sequence {i} is empty")
            cut = max(0, len(seq) - max_len) if max_len else 0
            rows.append(seq[cut:])
            cuts.append(cut)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, :len(r)] = 1
        values = model(ids.to(device), mask.to(device), return_logits=False).values.float().cpu().numpy()
        for j, i in enumerate(batch):
            n = len(rows[j])
            start = starts[i] - cuts[j]
            v = values[j, max(start, 0):n].astype(np.float32)
            if start < 0:
                v = np.concatenate([np.full(-start, np.nan, np.float32), v])
            out[i] = (float(values[j, n - 1]), v)
    dummy = torch.full((1, 1), pad_id, dtype=torch.long, device=device)
    for _ in range(len(batches), min_batches):
        model(dummy, torch.ones_like(dummy), return_logits=False)
    return out


SHARED_BATCH_CUT = 0.8


def _score_shared_prompts(model: Verifier, sequences: Sequence[Sequence[int]], starts: Sequence[int],
                          batch_size: int, max_len: int | None, out: list, progress: bool, desc: str) -> list[int]:
    """Score, into `out`, the sequences that share a prompt (the tokens before starts[i]) with others;
    returns the indices left for the plain path.

    A problem's 100 samples repeat its prompt, about half of each sequence on the synthetic task: the
    prompt goes through the model once (one row; its keys and values broadcast to every row of each
    batch) and only the solutions are batched. Solutions are right-padded: causal attention keeps a pad from
    changing any earlier position, so no mask is needed and each row's values equal the plain path's.
    Sequences cut by max_len, those with no solution token and prompts seen once take the plain path."""
    from transformers import DynamicCache

    from gsmv.sampling.cache_utils import layer_kv

    groups: dict[tuple[int, ...], list[int]] = {}
    rest = []
    for i, seq in enumerate(sequences):
        if 0 < starts[i] < len(seq) and not (max_len and len(seq) > max_len):
            groups.setdefault(tuple(seq[:starts[i]]), []).append(i)
        else:
            rest.append(i)
    device = next(model.parameters()).device
    work = []
    for prompt, idx in groups.items():
        if len(idx) == 1:
            rest += idx
            continue
        # Longest first; a batch also ends where a solution is under SHARED_BATCH_CUT of the batch's longest,
        # so padding stays small (on runs/synth's test samples: 6% of the tokens instead of 21%).
        idx.sort(key=lambda i: -len(sequences[i]))
        p, batches, cur = len(prompt), [], []
        for i in idx:
            longest = len(sequences[cur[0]]) - p if cur else 0
            if cur and (len(cur) == batch_size or len(sequences[i]) - p < SHARED_BATCH_CUT * longest):
                batches.append(cur)
                cur = []
            cur.append(i)
        work.append((prompt, [*batches, cur]))
    bar = progress_bar(total=sum(len(b) for _, b in work), desc=desc, disable=not progress, unit="batch")
    for prompt, batches in work:
        cache = DynamicCache()  # the prompt's keys and values, computed once for all of its batches
        model.hidden_states(torch.tensor([prompt], dtype=torch.long, device=device), None, cache)
        prompt_kv = layer_kv(cache)
        for batch in batches:
            _score_solutions(model, sequences, prompt_kv, len(prompt), batch, out)
            bar.update()
    bar.close()
    return rest


def _score_solutions(model: Verifier, sequences: Sequence[Sequence[int]], prompt_kv: list, p: int,
                     batch: list[int], out: list) -> None:
    """Values of the solutions sequences[i][p:] for i in batch, continuing the shared prompt's cache."""
    from transformers import DynamicCache

    # A broadcast view: the cache's first update concatenates onto it (a new tensor), leaving prompt_kv intact.
    kv = [(k.expand(len(batch), *k.shape[1:]), v.expand(len(batch), *v.shape[1:])) for k, v in prompt_kv]
    device = prompt_kv[0][0].device
    width = max(len(sequences[i]) for i in batch) - p
    ids = torch.zeros((len(batch), width), dtype=torch.long)  # right padding: never attended to
    for j, i in enumerate(batch):
        sol = sequences[i][p:]
        ids[j, :len(sol)] = torch.tensor(sol, dtype=torch.long)
    hidden = model.hidden_states(ids.to(device), None, DynamicCache(ddp_cache_data=kv))
    values = torch.sigmoid(model.value_logits(hidden)).float().cpu().numpy()
    for j, i in enumerate(batch):
        n = len(sequences[i]) - p
        out[i] = (float(values[j, n - 1]), values[j, :n].astype(np.float32))


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """The token ids the verifier reads before a solution: format_prompt(question), encoded the way
    the generator saw it in fine-tuning (the tokenizer's own special tokens, e.g. a BOS, included)."""
    from gsmv.data.gsm8k import format_prompt
    from gsmv.models.tokenizer import encode_prompt

    return encode_prompt(tokenizer, format_prompt(question))


def solution_ids(tokens: Sequence[int] | None, finished: bool | None, eos_id: int | None) -> list[int]:
    """What the verifier reads after the prompt: the sample's tokens, plus EOS when the sample
    stopped at EOS (the sampler stores tokens without it). The generator was trained on
    solution + EOS, so a finished sample ends the way training text does, and the verifier can tell a
    complete solution from one cut at max_new_tokens."""
    ids = [int(t) for t in (tokens or [])]
    if finished and eos_id is not None:
        ids.append(int(eos_id))
    return ids


READS = ("tokens", "text")


def sample_solution_ids(reads: str, tokenizer: Any, tokens: Sequence[int] | None, finished: bool | None,
                        text: str | None) -> list[int]:
    """What a verifier that `reads` tokens or text (Verifier.reads) reads after the prompt for one stored
    sample: the sampled ids (solution_ids), or the sample's text encoded with the verifier's own tokenizer,
    plus its EOS when the sample finished."""
    if reads == "text":
        from gsmv.models.tokenizer import encode_solution

        return encode_solution(tokenizer, text or "", eos=bool(finished))
    return solution_ids(tokens, finished, tokenizer.eos_token_id)


def shares_vocabulary(generator_tok: Any, verifier_tok: Any) -> bool:
    """Whether a verifier with `verifier_tok` can read `generator_tok`'s ids: every generator token has the same id
    in the verifier's vocabulary (the verifier may add tokens, such as the value head's reserved one)."""
    vv = verifier_tok.get_vocab()
    return all(vv.get(t) == i for t, i in generator_tok.get_vocab().items())


def vocabulary_hash(tok: Any) -> str:
    """A short hash of a tokenizer's vocabulary (token → id), kept in verifier_config.json to catch a verifier
    folder whose tokenizer was swapped."""
    import hashlib

    items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def max_positions(lm: Any) -> int | None:
    """The longest sequence the LM's position embeddings allow (None when unbounded or unknown); lm: a model,
    or its config."""
    cfg = getattr(lm, "config", lm)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def input_limit(lm: nn.Module, max_len: int) -> int:
    """The longest input the verifier reads: verifier.max_len, capped by the LM's positions (training, scoring,
    search and solve cut the same way)."""
    limit = max_positions(lm)
    return min(max_len, limit) if limit else max_len


def pad_id_of(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else EOS (padding is masked either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _token_string(tok: Any, tid: int | None) -> str | None:
    if tok is None or tid is None:
        return None
    return tok.convert_ids_to_tokens(tid)


def ensure_value_token(lm: nn.Module, tokenizer: Any, value_token: str = DEFAULT_VALUE_TOKEN) -> int:
    """The id of `value_token`, adding it to the tokenizer (and the embeddings if needed) when absent."""
    tid = tokenizer.convert_tokens_to_ids(value_token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        tokenizer.add_tokens([value_token], special_tokens=True)
        tid = tokenizer.convert_tokens_to_ids(value_token)
    n_rows = lm.get_output_embeddings().weight.shape[0]
    if tid >= n_rows:
        lm.resize_token_embeddings(tid + 1, mean_resizing=True)
    return int(tid)


def build_verifier(name_or_path: str | Path, *, head: str = "token", value_token: str = DEFAULT_VALUE_TOKEN,
                   dtype: torch.dtype | None = torch.float32, device: torch.device | str | None = None,
                   dropout: float = 0.0) -> tuple[Verifier, Any]:
    """A fresh verifier from a model folder, hub id or preset (the LM weights are its start)."""
    from gsmv.models.loading import load_model_and_tokenizer

    lm, tok = load_model_and_tokenizer(str(name_or_path), dtype=dtype, device=device or "cpu", dropout=dropout)
    tid = ensure_value_token(lm, tok, value_token) if head == "token" else None
    ver = Verifier(lm, head=head, value_token_id=tid, tokenizer=tok)
    if device is not None:
        ver.to(device)
    return ver, tok


def check_verifier_folder(folder: Path) -> list:
    """What is damaged in a verifier folder train-verifier finished: a model folder's damage
    (gsmv.models.loading.check_model_folder) or a missing or damaged value head or verifier config."""
    from gsmv.models.loading import check_model_folder

    return check_model_folder(folder, also=(HEAD_NAME, CONFIG_NAME))


def load_verifier(path: str | Path, dtype: torch.dtype | None = torch.float32, device: torch.device | str | None = None,
                  dropout: float = 0.0) -> tuple[Verifier, Any]:
    """Restore a folder written by Verifier.save_pretrained; returns (verifier in eval mode, tokenizer)."""
    from gsmv.models.loading import load_model_and_tokenizer

    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise GsmvError(f"{path}: not a verifier folder (no {CONFIG_NAME}; has train-verifier run?)")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise GsmvError(f"{cfg_path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if meta.get("head") not in HEADS:
        raise GsmvError(f"{cfg_path}: 'head' is {meta.get('head')!r}: valid heads are {', '.join(HEADS)}")
    head_path = path / HEAD_NAME
    if not head_path.is_file():
        raise GsmvError(f"{path}: no {HEAD_NAME} (an incomplete verifier folder)")
    lm, tok = load_model_and_tokenizer(str(path), dtype=dtype, device=device or "cpu", dropout=dropout)
    if meta.get("reads", "tokens") not in READS:
        raise GsmvError(f"{cfg_path}: 'reads' is {meta.get('reads')!r}: valid values are {', '.join(READS)}")
    if meta.get("vocabulary") and meta["vocabulary"] != vocabulary_hash(tok):
        raise GsmvError(f"{path}: the tokenizer differs from the one the verifier was trained with "
                        f"({CONFIG_NAME} says vocabulary {meta['vocabulary']}, the folder's is {vocabulary_hash(tok)})")
    ver = Verifier(lm, head=meta["head"], value_token_id=meta.get("value_token_id"), tokenizer=tok)
    ver.reads = meta.get("reads", "tokens")
    try:
        head_state = load_file(str(head_path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged header
        raise GsmvError(f"{head_path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    ver.load_head_state(head_state, str(head_path))
    if device is not None:
        ver.to(device)
    ver.eval()
    return ver, tok


def _weighted_bce(z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ weight · BCE(sigmoid(z), y): the probe's loss, weights summing to 1."""
    return (nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none") * weight).sum()


def _logistic_fit(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted L2-regularised logistic regression (weights sum to 1): the minimiser's (w, b), by L-BFGS."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _weighted_bce(x @ w + b, y, weight) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()
