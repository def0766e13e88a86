"""The next-item loss: cross-entropy over the full catalogue, or sampled softmax with the logQ correction
for large catalogues, with the items seen so far left out of each position's softmax when asked."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.encoding import seen_items
from models.model import AttentionRecommender


class NegativeSampler:
    """Negatives for sampled softmax with the logQ correction (Bengio & Senecal 2008; Yi et al. 2019).

    Every step draws ``n`` items with replacement from Q(i) proportional to (count_i + 1) ** alpha over
    items 1..N (``counts`` are training target counts), shared by every position of the batch. Every logit,
    the target's and the negatives', is corrected by - log Q(item), so popular items, which are sampled
    more often, are not pushed down more than the full softmax would. The sampler has its own seeded
    generator (inverse-CDF sampling, any catalogue size): the same negatives on every rank and after a resume.
    """

    def __init__(self, counts: torch.Tensor, n: int, alpha: float, seed: int, device: torch.device) -> None:
        if n < 1:
            raise ValueError(f"n_negatives={n}: sampled softmax needs at least one negative per step")
        q = (counts[1:].double().clamp(min=0) + 1.0) ** alpha  # (N,)
        q = q / q.sum()
        self.cdf = q.cumsum(0)  # (N,) float64 on CPU
        self.log_q = torch.cat([torch.zeros(1, dtype=torch.float64), q.log()]).float().to(device)  # (N+1,)
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, device: torch.device) -> torch.Tensor:
        """(n,) item indices in 1..N."""
        u = torch.rand(self.n, generator=self.generator, dtype=torch.float64) * self.cdf[-1]
        idx = torch.searchsorted(self.cdf, u).clamp(max=self.cdf.numel() - 1)
        return (idx + 1).to(device)


def sampled_logits(
    model: AttentionRecommender,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Corrected logits (T, 1 + K): column 0 the target, then the K shared negatives; a negative equal to
    the row's target (an accidental hit), or among the row's ``seen`` items (T, S) when given, is masked out.
    hidden (T, d), targets (T,), negatives (K,), log_q (N+1,). Builds T x (K + 1) logits, never T x N."""
    pos = model.target_scores(hidden, targets) - log_q[targets]  # (T,)
    neg = model.item_scores(hidden, negatives) - log_q[negatives]  # (T, K)
    drop = negatives[None, :] == targets[:, None]  # (T, K)
    cold = model.cold_items(negatives)  # (K,) or None: cold items are never negatives (see AttentionRecommender)
    if cold is not None:
        drop |= cold[None, :] & (negatives[None, :] != targets[:, None])
    if seen is not None:  # membership by binary search in each sorted row: T x K, never T x K x S
        rows = seen.sort(-1).values  # (T, S)
        wanted = negatives.expand(len(rows), -1).contiguous()  # (T, K)
        at = torch.searchsorted(rows, wanted).clamp(max=rows.shape[1] - 1)  # (T, K)
        drop |= rows.gather(-1, at) == wanted
    neg = neg.masked_fill(drop, float("-inf"))  # (T, K)
    return torch.cat([pos[:, None], neg], 1).float()  # (T, 1 + K)


def seen_prefixes(items: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """For each selected position (b, t) of ``sel`` (B, L), the items at positions 0..t of row b, zeros
    after t: (T, L). These are the items candidate generation would exclude after that position."""
    L = items.shape[1]
    upto = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()  # (L, L): row t keeps 0..t
    return (items[:, None, :] * upto)[sel]  # (T, L)


def drop_seen_targets(items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``targets`` (B, L) with every target already among the items up to its position set to 0: candidate
    generation never serves a seen item, so a repeat is not something to learn to rank."""
    sel = targets > 0  # (B, L)
    repeat = (seen_prefixes(items, sel) == targets[sel][:, None]).any(-1)  # (T,)
    out = targets.clone()
    out[sel] = torch.where(repeat, torch.zeros_like(targets[sel]), targets[sel])
    return out


def next_item_loss(
    model: AttentionRecommender,
    inputs: dict[str, torch.Tensor],
    targets: torch.Tensor,
    negatives: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    reduction: str = "mean",
    mask_seen: bool = False,
) -> torch.Tensor:
    """Cross-entropy of the next item at every position that has a target, each weighed by
    ``inputs["target_weights"]`` when given (the target's attention strength): over the full catalogue, or,
    with ``negatives`` and ``log_q`` (see :class:`NegativeSampler`), sampled softmax with logQ correction.

    ``mask_seen``: at each position the items seen up to it are left out of the softmax (out of the sampled
    negatives with sampled softmax), as candidate generation and evaluation leave them out of the ranking;
    targets must not be among them (see :func:`drop_seen_targets`)."""
    hidden = model.encode(inputs)  # (B, L, d)
    sel = targets > 0  # (B, L)
    h, t = hidden[sel], targets[sel]  # (T, d), (T,)
    weights = inputs.get("target_weights")  # (B, L) each target's attention strength, models.dataset.TrainingSet
    w = None if weights is None else weights[sel].float()  # (T,)

    def reduce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if w is None:
            return F.cross_entropy(logits, labels, reduction=reduction)
        loss = F.cross_entropy(logits, labels, reduction="none") * w  # (T,)
        return loss.sum() if reduction == "sum" else loss.sum() / w.sum().clamp(min=1e-6)

    if negatives is None:
        logits = model.scores(h, model.item_table()).float()  # (T, N+1)
        cold = model.cold_items()  # (N+1,) or None: cold items are left out (AttentionRecommender.cold_items)
        if cold is not None:
            not_target = torch.arange(logits.shape[1], device=t.device)[None, :] != t[:, None]  # (T, N+1)
            logits = logits.masked_fill(cold[None, :] & not_target, -math.inf)
        if not mask_seen:  # padding (column 0) is never a next item
            return reduce(logits[:, 1:], t - 1)
        padding = torch.zeros_like(t)[:, None]  # (T, 1): column 0 is never a next item either
        left_out = torch.cat([padding, seen_prefixes(seen_items(inputs), sel)], 1)  # (T, 1 + L)
        return reduce(logits.scatter(-1, left_out, -math.inf), t)
    if log_q is None:
        raise ValueError(
            "sampled softmax needs log_q, the log sampling probability of every item (NegativeSampler.log_q)"
        )
    seen = seen_prefixes(seen_items(inputs), sel) if mask_seen else None  # (T, L)
    logits = sampled_logits(model, h, t, negatives, log_q, seen)  # (T, 1 + K)
    return reduce(logits, torch.zeros_like(t))


class NextItemLoss(nn.Module):
    """:func:`next_item_loss` summed over a batch, as a module. DistributedDataParallel synchronises the
    gradients of what runs inside the ``forward`` of the module it wraps, and the loss reaches the model
    through ``encode`` and ``scores``, not through the model's own ``forward``: so training wraps this."""

    def __init__(self, model: AttentionRecommender, mask_seen: bool) -> None:
        super().__init__()
        self.model = model
        self.mask_seen = mask_seen

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        targets: torch.Tensor,
        negatives: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
        empty: bool = False,
    ) -> torch.Tensor:
        """The summed loss; ``empty`` (no target in ``targets``): a zero that reaches every parameter, so a
        rank with nothing to learn from still joins the gradient all-reduce, with zero gradients."""
        if empty:
            return sum(p.sum() for p in self.model.parameters()) * 0.0
        return next_item_loss(self.model, inputs, targets, negatives, log_q, reduction="sum", mask_seen=self.mask_seen)
