"""Each sampled token's text: a run's tokenizer for its sample ids, and the text pieces of id lists.

Shared by report.html (each token coloured by its value) and the step-level evaluation (gsmv.steps: which token
closes each `<<expr=result>>` step, to read the verifier's value there). Decoding is batched and each distinct
token is decoded once, so the pieces of every test sample of a run (50,000 at N = 100) cost seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gsmv.artifacts import RunPaths

log = logging.getLogger(__name__)


def _tokenizer_folders(run_dir: str | Path) -> list[Path]:
    """The run's folders that hold a tokenizer, in the order the sample ids' tokenizer is looked for: the
    generator's (the sample token ids are its ids), the verifier's, run_dir/tokenizer."""
    paths = RunPaths(run_dir)
    return [f for f in (paths.generator_final, paths.verifier_final, paths.tokenizer)
            if (f / "tokenizer_config.json").exists() or (f / "tokenizer.json").exists()]


def load_tokenizer(run_dir: str | Path) -> Any | None:
    """The generator's tokenizer (the sample token ids are its ids), else the verifier's, else run_dir/tokenizer."""
    from transformers import AutoTokenizer

    for folder in _tokenizer_folders(run_dir):
        try:
            return AutoTokenizer.from_pretrained(str(folder))
        except Exception as e:  # noqa: BLE001 - any tokenizer failure means plain-text fallback
            log.warning("cannot load the tokenizer in %s (%s); trying the next one", folder, e)
    return None


class _FastTokenizer:
    """A tokenizer.json read by the `tokenizers` library alone: what token pieces need (batched decode and encode)
    without importing transformers (5 s of imports, 20 times the rest of a run's step reading)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.backend_tokenizer = Tokenizer.from_file(str(path))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids


def load_decoder(run_dir: str | Path) -> Any | None:
    """The sample ids' tokenizer (as load_tokenizer picks it) for decoding token pieces only: its tokenizer.json
    through `tokenizers` when it has one (what token_pieces_batch decodes with either way), else load_tokenizer."""
    folders = _tokenizer_folders(run_dir)
    if folders and (folders[0] / "tokenizer.json").is_file():
        try:
            return _FastTokenizer(folders[0] / "tokenizer.json")
        except Exception as e:  # noqa: BLE001 - a tokenizer.json tokenizers cannot read: the full loader
            log.warning("cannot read %s (%s); loading the tokenizer with transformers", folders[0], e)
    return load_tokenizer(run_dir)


def _batch_decoder(tokenizer: Any):
    """Decode many id lists at once, skipping special tokens and without cleanup of spaces."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: transformers' per-call overhead dominates otherwise
        return lambda seqs: backend.decode_batch(seqs, skip_special_tokens=True)
    return lambda seqs: tokenizer.batch_decode(seqs, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _anchor_id(tokenizer: Any) -> int | None:
    try:
        ids = tokenizer.encode("x", add_special_tokens=False)
    except Exception:  # noqa: BLE001 - no encode: skip the anchored pass
        return None
    return ids[0] if len(ids) == 1 else None


def _pieces_pass(decode, id_lists: list[list[int]], prefix: list[int]) -> list[list[str] | None]:
    """Each token's text, decoded after `prefix` (whose own text is removed); None where that fails.

    Tokens that hold part of a multi-byte character decode to U+FFFD alone; a run of them is decoded
    together and its text given to the run's last token (the others get "").
    """
    head = decode([prefix])[0] if prefix else ""
    uniq = sorted({t for ids in id_lists for t in ids})
    # Each distinct token's text after the prefix once (None: the prefix's text is not kept), and which hold a
    # part character: the per-sample work is then a lookup, and the run search only where one occurs.
    alone = {t: (x[len(head):] if x.startswith(head) else None)
             for t, x in zip(uniq, decode([prefix + [t] for t in uniq]), strict=True)}
    partial = {t for t, x in alone.items() if x is not None and "\ufffd" in x}
    unkept = {t for t, x in alone.items() if x is None}
    out: list[list[str] | None] = []
    runs: list[tuple[int, int, int]] = []  # (sample, first, last) token index of runs to decode together
    for i, ids in enumerate(id_lists):
        if unkept and not unkept.isdisjoint(ids):
            out.append(None)
            continue
        pieces = [alone[t] for t in ids]
        j = 0 if partial and not partial.isdisjoint(ids) else len(pieces)
        while j < len(pieces):
            if "\ufffd" in pieces[j]:
                k = j
                while k + 1 < len(pieces) and "\ufffd" in pieces[k + 1]:
                    k += 1
                runs.append((i, j, k))
                j = k + 1
            else:
                j += 1
        out.append(pieces)  # type: ignore[arg-type]
    if runs:
        merged = decode([prefix + id_lists[i][a:b + 1] for i, a, b in runs])
        for (i, a, b), x in zip(runs, merged, strict=True):
            pieces = out[i]
            if pieces is None or not x.startswith(head):
                out[i] = None
                continue
            pieces[a:b + 1] = [""] * (b - a) + [x[len(head):]]
    return out


def token_pieces_batch(tokenizer: Any, id_lists: list[list[int]], texts: list[str]) -> list[list[str] | None]:
    """The text of each token of each sample, joining into the sample's text (modulo outer whitespace).

    Passes, cheapest first (each distinct token is decoded once per pass): each token alone (exact
    for byte-level BPE); each token after a fixed anchor token (tokenizers that drop a lone token's
    leading space, like SentencePiece); growing prefixes for what is left. None where all fail.
    """
    decode = _batch_decoder(tokenizer)
    out: list[list[str] | None] = [None] * len(id_lists)

    def settle(candidates: list[int], results: list[list[str] | None]) -> list[int]:
        left = []
        for i, pieces in zip(candidates, results, strict=True):
            if pieces is not None and "".join(pieces).strip() == (texts[i] or "").strip():
                out[i] = pieces
            else:
                left.append(i)
        return left

    try:
        todo = [i for i, ids in enumerate(id_lists) if ids]
        todo = settle(todo, _pieces_pass(decode, [id_lists[i] for i in todo], []))
        anchor = _anchor_id(tokenizer) if todo else None
        if anchor is not None:
            todo = settle(todo, _pieces_pass(decode, [id_lists[i] for i in todo], [anchor]))
        for i in todo:
            ids = id_lists[i]
            if len(ids) > 1024:  # quadratic: not worth it for runaway samples
                continue
            pieces, prev = [], ""
            for cur in decode([ids[: j + 1] for j in range(len(ids))]):
                if not cur.startswith(prev):
                    break
                pieces.append(cur[len(prev):])
                prev = cur
            else:
                settle([i], [pieces])
    except Exception as e:  # noqa: BLE001 - ids outside the vocabulary and the like: plain text
        log.warning("cannot decode sample tokens (%s); showing plain text", e)
        return [None] * len(id_lists)
    return out


def token_pieces(tokenizer: Any, ids: list[int], text: str) -> list[str] | None:
    return token_pieces_batch(tokenizer, [list(ids)], [text])[0]
