"""Exact top-K over the whole catalogue with exclusions: the one ranking evaluation and serving share.

Every ranking covers the whole catalogue (never sampled negatives) and excludes the padding row and the items
in the user's history, so a target the user already had counts as a miss in evaluation, exactly as candidate
generation never serves it. Ties are broken by item index (lower first), the same for every scorer, so a
constant scorer earns no credit from ties.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Sequence

import torch

from models.model import AttentionRecommender

#: (user rows slice, item column start, item column end) -> (rows, end - start) scores. rank_catalogue masks
#: the result in place when it is not a view of other data (else it copies it first), and never keeps a
#: result past the next call, so a scorer may hand out the same buffer every time.
Scorer = Callable[[slice, int, int], torch.Tensor]


def _writable(sc: torch.Tensor) -> torch.Tensor:
    """``sc`` as float32 that may be modified in place: a scorer's fresh float32 result is used as it is
    (no copy of a users x items block), a view or another dtype is copied."""
    if sc.dtype != torch.float32:
        return sc.float()
    return sc.clone() if sc._base is not None else sc


def _seen_tensor(seen: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """(U, S) seen item rows, right-padded with -1; built with one copy, not one per user."""
    lengths = torch.tensor([len(s) for s in seen], dtype=torch.long)  # (U,)
    width = max(1, int(lengths.max())) if len(seen) else 1
    out = torch.full((len(seen), width), -1, dtype=torch.long)
    flat = torch.tensor([i for s in seen for i in s], dtype=torch.long)  # (sum of lengths,)
    if flat.numel():
        rows = torch.repeat_interleave(torch.arange(len(seen)), lengths)
        cols = torch.arange(flat.numel()) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        out[rows, cols] = flat
    return out.to(device)


def rank_catalogue(
    scorer: Scorer,
    n_users: int,
    n_rows: int,
    seen: Sequence[Sequence[int]],
    k: int,
    targets: Sequence[int] | None = None,
    user_batch: int = 512,
    item_chunk: int = 65536,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Rank item rows 1..n_rows-1 for every user, excluding row 0 (padding) and each user's ``seen`` rows.

    Scores are computed ``user_batch`` users by ``item_chunk`` items at a time, so memory stays bounded
    for any catalogue. Returns the top-k rows (U, k) and scores (U, k) (-inf and row 0 fill the tail when
    fewer than k items are left), and, when ``targets`` are given, each target's 1-based rank (``inf``
    when the target is 0 = unknown, or in ``seen``).
    """
    device = torch.device(device)
    k_eff = min(k, n_rows - 1)
    all_idx, all_score, ranks = [], [], []
    for s in range(0, n_users, user_batch):
        rows = slice(s, min(s + user_batch, n_users))
        b = rows.stop - rows.start
        seen_b = _seen_tensor(seen[rows], device)  # (b, S), -1 pads
        best_score = torch.full((b, 0), float("-inf"), device=device)
        best_idx = torch.zeros((b, 0), dtype=torch.long, device=device)
        if targets is not None:
            tgt = torch.tensor(list(targets[rows]), dtype=torch.long, device=device)  # (b,)
            tgt_score = torch.full((b,), float("-inf"), device=device)
            greater = torch.zeros(b, dtype=torch.long, device=device)
        # pass 1 (targets only): each target's own score, with seen/unknown targets at -inf
        for c0 in range(0, n_rows, item_chunk):
            c1 = min(c0 + item_chunk, n_rows)
            sc = _writable(scorer(rows, c0, c1))  # (b, c)
            if c0 == 0:
                sc[:, 0] = float("-inf")
            local = seen_b - c0  # (b, S)
            ok = (seen_b >= 0) & (local >= 0) & (local < c1 - c0)
            r_idx = torch.arange(b, device=device)[:, None].expand_as(local)
            sc[r_idx[ok], local[ok]] = float("-inf")
            if targets is not None:
                inside = (tgt >= c0) & (tgt < c1) & (tgt > 0)
                at = (tgt - c0).clamp(0, c1 - c0 - 1)[:, None]  # (b, 1)
                tgt_score = torch.where(inside, sc.gather(1, at)[:, 0], tgt_score)
            top = sc.topk(min(k_eff, c1 - c0), dim=1, sorted=False)  # sorted by the merge below
            best_score = torch.cat([best_score, top.values], 1)
            best_idx = torch.cat([best_idx, top.indices + c0], 1)
            keep = best_score.topk(min(k_eff, best_score.shape[1]), dim=1)
            best_score, best_idx = keep.values, best_idx.gather(1, keep.indices)
        if targets is not None:  # pass 2: count items that outrank each target (ties: lower index first)
            for c0 in range(0, n_rows, item_chunk):
                c1 = min(c0 + item_chunk, n_rows)
                sc = _writable(scorer(rows, c0, c1))
                if c0 == 0:
                    sc[:, 0] = float("-inf")
                local = seen_b - c0
                ok = (seen_b >= 0) & (local >= 0) & (local < c1 - c0)
                r_idx = torch.arange(b, device=device)[:, None].expand_as(local)
                sc[r_idx[ok], local[ok]] = float("-inf")
                col = torch.arange(c0, c1, device=device)[None, :]  # (1, c)
                t = tgt_score[:, None]
                greater += ((sc > t) | ((sc == t) & (col < tgt[:, None]))).sum(1)
            ranks.extend(
                float("inf") if not math.isfinite(ts) else float(g) + 1.0
                for ts, g in zip(tgt_score.tolist(), greater.tolist())
            )
        best_idx = torch.where(torch.isfinite(best_score), best_idx, torch.zeros_like(best_idx))
        all_idx.append(best_idx.cpu())
        all_score.append(best_score.cpu())
    if not all_idx:
        return torch.zeros(0, k_eff, dtype=torch.long), torch.zeros(0, k_eff), ranks
    return torch.cat(all_idx), torch.cat(all_score), ranks


def model_scorer(
    model: AttentionRecommender,
    popularity: torch.Tensor,
    vecs: torch.Tensor,
    has_history: Sequence[bool],
    allowed: torch.Tensor | None = None,
) -> Scorer:
    """Dot products of user states with ``model``'s item vectors; users with no known history get training
    ``popularity`` (N+1,) (log1p of counts) instead, so every user still gets a ranking. Items where ``allowed``
    (N+1,) is False score -inf for everyone (e.g. items no longer in the catalogue)."""
    # the item bias rides along as a last column against a constant 1, so scoring is one plain matmul
    with torch.no_grad():
        table = torch.cat([model.item_table(), model.item_biases()[:, None]], 1).to(vecs.device).float()  # (N+1, d+1)
    vecs = torch.cat([vecs.detach().float(), torch.ones(vecs.shape[0], 1, device=vecs.device)], 1)  # (U, d+1)
    cold_rows = [u for u, h in enumerate(has_history) if not h]
    cold = torch.tensor([not h for h in has_history], dtype=torch.bool, device=vecs.device)
    pop = torch.log1p(popularity.to(vecs.device).float())  # (N+1,)
    blocked = None if allowed is None else ~allowed.to(vecs.device)

    buffers: dict[tuple[int, int], torch.Tensor] = {}  # one per block shape: no fresh users x items allocation

    def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
        shape = (rows.stop - rows.start, c1 - c0)
        if shape not in buffers:
            buffers[shape] = torch.empty(shape, device=vecs.device)
        with torch.autocast(vecs.device.type, enabled=False):  # rank in float32 even inside a bf16 region
            sc = torch.matmul(vecs[rows], table[c0:c1].T, out=buffers[shape])  # (b, c): dot product + item bias
        i = bisect.bisect_left(cold_rows, rows.start)  # checked on the host: no device sync
        if i < len(cold_rows) and cold_rows[i] < rows.stop:
            sc[cold[rows]] = pop[c0:c1]
        if blocked is not None:
            sc.masked_fill_(blocked[c0:c1][None, :], float("-inf"))
        return sc

    return score
