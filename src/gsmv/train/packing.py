"""Verifier batches as flat index lists, laid out plainly (one example a row) or packed (shared prompts).

Both layouts give the loss the same thing: the model's input (`input_ids`, `attention_mask`, and for packed
rows `position_ids`) plus flat indices into its (rows × width) outputs:

- value_idx, value_target: every position that carries the value loss, and its target;
- lm_src, lm_tgt: every position whose next token is an LM target, and that token;
- last_idx, group, outcome: each example's final position, problem and label (the ranking loss);
- n_tokens: the real tokens read (logging).

An example (gsmv.train.verifier.make_example / make_lm_example) is input_ids, labels, value_mask, target
and prompt_len: its first prompt_len tokens are the prompt (the question), the rest its own tokens.

Packing: examples whose prompts are the same tokens form a block; a block is laid out as the prompt once
followed by each example's own tokens, and blocks are packed first-fit into rows of at most `budget` tokens.
The attention mask (4D, additive) lets a prompt token see the prompt before it, and an example's token the
prompt and its own tokens before it; position ids restart for each example at prompt_len. Each example so
sees exactly what it sees unpacked, so values, losses and gradients equal the plain layout's up to float
rounding (tests/train/test_packing.py), while a problem's question is read once instead of once a sample.
A block longer than the budget is split into pieces that each repeat the prompt; an example longer than the
budget gets a row of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Batch = dict[str, torch.Tensor]


def _example_indices(ex: dict, flat: np.ndarray) -> dict[str, list]:
    """Example ex's value and LM entries, its positions mapped to flat (flat[j] = where position j sits)."""
    ids, labels, vm, target = ex["input_ids"], ex["labels"], ex["value_mask"], ex["target"]
    vpos = [j for j, m in enumerate(vm) if m]
    lpos = [j for j in range(len(ids) - 1) if labels[j + 1] != -100]
    return {"value_idx": flat[vpos].tolist(), "value_target": [float(target[j]) for j in vpos],
            "lm_src": flat[lpos].tolist(), "lm_tgt": [int(labels[j + 1]) for j in lpos],
            "last_idx": [int(flat[len(ids) - 1])], "group": [ex.get("group", -1)],
            "outcome": [ex.get("outcome", -1)]}


def _gather(examples: Sequence[dict], flats: Sequence[np.ndarray], n_tokens: int) -> Batch:
    cols: dict[str, list] = {k: [] for k in ("value_idx", "value_target", "lm_src", "lm_tgt", "last_idx",
                                              "group", "outcome")}
    for ex, flat in zip(examples, flats, strict=True):
        for k, v in _example_indices(ex, flat).items():
            cols[k] += v
    out = {k: torch.tensor(v, dtype=torch.float32 if k == "value_target" else torch.long) for k, v in cols.items()}
    out["n_tokens"] = torch.tensor(n_tokens, dtype=torch.long)
    return out


def plain_collate(pad_id: int):
    """One example a row, right-padded; 2D attention mask. Also keeps the row-shaped labels, value_mask and
    target (read by calibration and older callers)."""

    def collate(examples: list[dict]) -> Batch:
        width = max(len(ex["input_ids"]) for ex in examples)
        n = len(examples)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        vmask = torch.zeros((n, width), dtype=torch.long)
        target = torch.zeros((n, width), dtype=torch.float32)
        for r, ex in enumerate(examples):
            k = len(ex["input_ids"])
            ids[r, :k] = torch.as_tensor(ex["input_ids"], dtype=torch.long)
            labels[r, :k] = torch.as_tensor(ex["labels"], dtype=torch.long)
            vmask[r, :k] = torch.as_tensor(ex["value_mask"], dtype=torch.long)
            target[r, :k] = torch.as_tensor(ex["target"], dtype=torch.float32)
            mask[r, :k] = 1
        flats = [np.arange(len(ex["input_ids"])) + r * width for r, ex in enumerate(examples)]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "value_mask": vmask,
                "target": target, **_gather(examples, flats, sum(len(ex["input_ids"]) for ex in examples))}

    return collate


def piece_length(examples: Sequence[dict], members: Sequence[int]) -> int:
    """Tokens of a piece laid out in a row: the members' shared prompt once, then each member's own tokens."""
    p = examples[members[0]]["prompt_len"]
    return p + sum(len(examples[i]["input_ids"]) - p for i in members)


def plan_rows(examples: Sequence[dict], budget: int) -> list[list[tuple[int, list[int]]]]:
    """Rows of pieces (block's first example, the examples laid out after its prompt), a pure function of the
    examples' prompts and lengths: blocks of one prompt in order of first appearance, split to fit `budget`,
    then packed first-fit in order of decreasing length."""
    blocks: dict[tuple[int, ...], list[int]] = {}
    for i, ex in enumerate(examples):
        blocks.setdefault(tuple(ex["input_ids"][:ex["prompt_len"]]), []).append(i)
    pieces: list[tuple[int, int, list[int]]] = []  # (length, first, members)
    for members in blocks.values():
        p = examples[members[0]]["prompt_len"]
        cur, used = [], p
        for i in members:
            own = len(examples[i]["input_ids"]) - p
            if cur and used + own > budget:
                pieces.append((used, cur[0], cur))
                cur, used = [], p
            cur.append(i)
            used += own
        pieces.append((used, cur[0], cur))
    pieces.sort(key=lambda t: -t[0])
    rows: list[list[tuple[int, list[int]]]] = []
    room: list[int] = []
    for length, first, members in pieces:
        for r, free in enumerate(room):
            if length <= free:
                rows[r].append((first, members))
                room[r] -= length
                break
        else:
            rows.append([(first, members)])
            room.append(budget - length)
    return rows


def packed_collate(pad_id: int, budget: int, dtype: torch.dtype = torch.float32):
    """Shared-prompt packing into rows of at most `budget` tokens (see the module docstring)."""

    def collate(examples: list[dict]) -> Batch:
        rows = plan_rows(examples, budget)
        lengths = [sum(piece_length(examples, members) for _, members in row) for row in rows]
        width = max(lengths)
        n = len(rows)
        ids = np.full((n, width), pad_id, dtype=np.int64)
        pos = np.zeros((n, width), dtype=np.int64)
        block = (np.arange(n * width, dtype=np.int64).reshape(n, width) + 1) << 20  # padding: a block of its own
        seg = np.zeros((n, width), dtype=np.int64)  # 0: prompt (or padding); k > 0: the k-th example's own tokens
        flats: list[np.ndarray | None] = [None] * len(examples)
        for r, row in enumerate(rows):
            at, b = 0, 0
            for _, members in row:
                b += 1
                p = examples[members[0]]["prompt_len"]
                ids[r, at:at + p] = examples[members[0]]["input_ids"][:p]
                pos[r, at:at + p] = np.arange(p)
                block[r, at:at + p] = b
                prompt_at, at = at, at + p
                for k, i in enumerate(members, start=1):
                    own = np.asarray(examples[i]["input_ids"][p:], dtype=np.int64)
                    ids[r, at:at + len(own)] = own
                    pos[r, at:at + len(own)] = np.arange(p, p + len(own))
                    block[r, at:at + len(own)] = b
                    seg[r, at:at + len(own)] = k
                    flats[i] = r * width + np.concatenate([np.arange(prompt_at, prompt_at + p),
                                                           np.arange(at, at + len(own))])
                    at += len(own)
        blk, sg = torch.from_numpy(block), torch.from_numpy(seg)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = (blk[:, :, None] == blk[:, None, :]) & causal & \
            ((sg[:, None, :] == 0) | (sg[:, :, None] == sg[:, None, :]))
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        return {"input_ids": torch.from_numpy(ids), "position_ids": torch.from_numpy(pos),
                "attention_mask": mask[:, None], **_gather(examples, flats, sum(lengths))}

    return collate
