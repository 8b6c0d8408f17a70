"""Log-likelihood of a solution under a causal LM: the baseline a verifier must beat, and a probe of what a
verifier's LM half knows (gsmv.train.curve).

A wrong sample holds tokens a model that knows the task finds unlikely; the generator's own likelihood of
its samples says little (it chose them), a better-trained LM's may say more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["sequence_loglik"]


@torch.inference_mode()
def sequence_loglik(model: torch.nn.Module, seqs: Sequence[Sequence[int]], starts: Sequence[int], *, pad_id: int,
                    keep: Sequence[Sequence[bool]] | None = None, batch_size: int = 64,
                    max_len: int | None = None) -> np.ndarray:
    """(n, 2) array: the sum and the mean log-probability of each seq[start:] under `model` (a causal LM
    called as model(input_ids=, attention_mask=).logits), over the solution positions where keep[i] is True
    (all when keep is None or keep[i] has no True; keep[i] covers seq[start:]). Sequences longer than max_len
    keep their last max_len tokens; solution tokens cut off that way do not count."""
    out = np.zeros((len(seqs), 2), dtype=np.float64)
    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        cuts = [max(0, len(seqs[i]) - max_len) if max_len else 0 for i in idx]
        rows = [list(seqs[i])[c:] for i, c in zip(idx, cuts, strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, :len(r)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        # token t is predicted at position t-1: the log-probability of every token but the first
        tok_lp = logp[:, :-1].gather(2, ids[:, 1:, None])[..., 0].cpu().numpy()
        for j, i in enumerate(idx):
            s, n = max(starts[i] - cuts[j], 1), len(rows[j])
            lp = tok_lp[j, s - 1:n - 1]
            if keep is not None:
                k = np.asarray(keep[i], dtype=bool)[len(keep[i]) - len(lp):]
                lp = lp[k] if k.any() else lp
            out[i] = (float(lp.sum()), float(lp.mean()) if lp.size else 0.0)
    return out
