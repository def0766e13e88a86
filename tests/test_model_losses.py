"""Tests of the next-item loss: full softmax, masking the items seen so far, sampled softmax with logQ."""

from __future__ import annotations

import math

import pytest
import torch

from models.config import build_model
from models.encoding import EVENT_TYPE_INDEX, seen_items
from models.losses import drop_seen_targets, next_item_loss
from models.vocab import ItemVocab
from tests.model_helpers import config, item_rows, random_batch, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def test_loss_is_log_catalogue_size_for_a_constant_model():
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    batch = random_batch(2, 4, 12)
    targets = torch.tensor([[0, 3, 4, 5], [1, 0, 0, 2]])
    assert next_item_loss(model, batch, targets).item() == pytest.approx(math.log(12), abs=1e-5)


def test_masked_loss_leaves_the_items_seen_so_far_out_of_each_softmax():
    model = tiny_model()
    batch = random_batch(2, 5, 12)
    batch["items"] = torch.tensor([[0, 0, 3, 5, 3], [1, 2, 4, 4, 6]])
    batch["event_types"] = torch.full((2, 5), EVENT_TYPE_INDEX["click"])  # every event makes its item seen
    batch["event_types"][0, :2] = 0  # row 0 is left padded
    targets = drop_seen_targets(batch["items"], torch.tensor([[0, 0, 5, 3, 7], [2, 4, 4, 6, 1]]))
    assert targets.tolist() == [[0, 0, 5, 0, 7], [2, 4, 0, 6, 0]]  # repeats of a seen item are no targets
    with torch.no_grad():
        got = next_item_loss(model, batch, targets, mask_seen=True, reduction="sum")
        scores = model(batch)  # (B, L, N+1)
    want = 0.0
    for b, t in zip(*torch.nonzero(targets, as_tuple=True)):
        allowed = [i for i in range(1, 13) if i not in batch["items"][b, : t + 1].tolist()]
        logits = scores[b, t, allowed]
        want += float(torch.logsumexp(logits, 0) - scores[b, t, targets[b, t]])
    assert got.item() == pytest.approx(want, rel=1e-5)
    with torch.no_grad():  # without the mask every item competes, so the loss is larger
        assert next_item_loss(model, batch, targets, reduction="sum").item() > got.item()
        # row 1 has no padding: its last position still leaves the padding item out of the softmax
        last = torch.zeros_like(targets)
        last[1, 4] = 12
        want_last = float(
            torch.logsumexp(scores[1, 4, [i for i in range(1, 13) if i not in (1, 2, 4, 6)]], 0) - scores[1, 4, 12]
        )
        assert next_item_loss(model, batch, last, mask_seen=True).item() == pytest.approx(want_last, rel=1e-5)


def test_an_impression_does_not_hide_the_click_that_follows_it():
    """impression i -> click i: the click is a target (serving never counts a mere impression as seen), a second
    click of i is not; the masked softmax leaves out only the items of the non-impression events so far."""
    model = tiny_model()
    imp, click = EVENT_TYPE_INDEX["impression"], EVENT_TYPE_INDEX["click"]
    batch = random_batch(1, 4, 12)
    batch["items"] = torch.tensor([[3, 5, 5, 3]])
    batch["event_types"] = torch.tensor([[click, imp, click, click]])
    assert seen_items(batch).tolist() == [[3, 0, 5, 3]]
    targets = drop_seen_targets(seen_items(batch), torch.tensor([[5, 5, 3, 9]]))
    assert targets.tolist() == [[5, 5, 0, 9]]  # next to the impression of 5, the click of 5 stays a target
    with torch.no_grad():
        got = next_item_loss(model, batch, targets, mask_seen=True, reduction="sum")
        scores = model(batch)
    want = 0.0
    for t, left_out in ((0, {3}), (1, {3}), (3, {3, 5})):
        allowed = [i for i in range(1, 13) if i not in left_out]
        want += float(torch.logsumexp(scores[0, t, allowed], 0) - scores[0, t, targets[0, t]])
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_sampled_softmax_builds_batch_by_negatives_logits_not_catalogue_wide():
    from torch.utils._python_dispatch import TorchDispatchMode

    from models.losses import NegativeSampler, next_item_loss

    class LargestOutput(TorchDispatchMode):
        """Records the largest tensor any operation produces."""

        def __init__(self):
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
            return out

    n_items, K = 100_000, 32
    vocab = ItemVocab.from_items(item_rows(n_items))
    torch.manual_seed(0)
    model = build_model(vocab, config(d_model=8, n_heads=2, n_layers=1, dropout=0.0, max_seq_len=8))
    batch = random_batch(4, 6, n_items)
    targets = torch.randint(1, n_items + 1, (4, 6))
    targets[:, :2] = 0  # T = 16 positions with a target
    counts = torch.zeros(n_items + 1, dtype=torch.float64)
    counts[1:1000] = 50.0  # a skewed proposal
    sampler = NegativeSampler(counts, K, 0.75, seed=0, device=torch.device("cpu"))
    negatives = sampler.sample(torch.device("cpu"))
    assert negatives.shape == (K,) and int(negatives.min()) >= 1 and int(negatives.max()) <= n_items

    with LargestOutput() as sampled:
        loss = next_item_loss(model, batch, targets, negatives, sampler.log_q)
    assert torch.isfinite(loss)
    assert sampled.largest <= 4 * 6 * 4 * 8  # the widest activation (B x L x 4d MLP); logits are T x (K+1) = 528
    with LargestOutput() as full:
        next_item_loss(model, batch, targets)
    assert full.largest >= 16 * n_items  # the full softmax builds (T, N) logits: the recorder does see them


def test_sampled_softmax_with_mask_seen_drops_negatives_the_position_has_seen():
    from models.losses import sampled_logits, seen_prefixes

    model = tiny_model()
    batch = random_batch(1, 4, 12)
    batch["items"] = torch.tensor([[2, 5, 7, 9]])
    targets = torch.tensor([[0, 3, 4, 11]])
    sel = targets > 0
    negatives = torch.tensor([2, 3, 7, 8, 9, 12])
    log_q = torch.zeros(13)
    with torch.no_grad():
        h = model.encode(batch)[sel]
        logits = sampled_logits(model, h, targets[sel], negatives, log_q, seen_prefixes(batch["items"], sel))
    dropped = torch.isinf(logits[:, 1:]).tolist()
    # position 1 has seen 2, 5 (target 3 is an accidental hit); position 2: 2, 5, 7; position 3: 2, 5, 7, 9
    assert dropped == [
        [True, True, False, False, False, False],
        [True, False, True, False, False, False],
        [True, False, True, False, True, False],
    ]
    assert torch.isfinite(logits[:, 0]).all()


def test_logq_correction_makes_sampled_gradients_match_the_full_softmax():
    from models.losses import NegativeSampler, next_item_loss

    n_items = 30
    vocab = ItemVocab.from_items(item_rows(n_items))
    torch.manual_seed(0)
    model = build_model(vocab, config(d_model=16, n_heads=2, n_layers=1, dropout=0.0, max_seq_len=8))
    with torch.no_grad():
        model.items.id_emb.weight.mul_(50)  # spread the scores so the softmax is far from uniform
    batch = random_batch(8, 6, n_items, seed=3)
    targets = torch.randint(1, n_items + 1, (8, 6), generator=torch.Generator().manual_seed(4))
    counts = torch.tensor([0.0] + [float(4 ** (i % 5)) for i in range(n_items)], dtype=torch.float64)  # Q skewed 256:1

    def grad(negatives=None, log_q=None) -> torch.Tensor:
        model.zero_grad()
        next_item_loss(model, batch, targets, negatives, log_q).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])

    exact = grad()
    sampler = NegativeSampler(counts, 100_000, 1.0, seed=0, device=torch.device("cpu"))
    negatives = sampler.sample(torch.device("cpu"))
    corrected = grad(negatives, sampler.log_q)
    uncorrected = grad(negatives, torch.zeros_like(sampler.log_q))

    def rel_error(g: torch.Tensor) -> float:
        return float((g - exact).norm() / exact.norm())

    assert rel_error(corrected) < 0.03  # measured 0.009 with 100,000 negatives
    assert rel_error(uncorrected) > 3 * rel_error(corrected)  # measured 0.081: biased toward popular items
