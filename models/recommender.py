"""The trained recommender as one self-describing object: its checkpoint file, user states, top-K items.

A checkpoint holds the config, the weights (item content buffers included), the item vocabulary and
the data version it was trained on, so evaluation and candidate generation rebuild the model from the
artifact alone (STYLE 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models.encoding import EncodedSequences, Events, encode_sequences
from models.model import AttentionRecommender, from_checkpoint, to_checkpoint
from models.ranking import model_scorer, rank_catalogue
from models.vocab import ItemVocab


@dataclass
class Recommender:
    """A model with everything needed to use it: item vocabulary, data version, training popularity."""

    model: AttentionRecommender
    vocab: ItemVocab
    data_version: dict[str, Any]  # {"dt", "snapshot_hash", ...} of the features it was trained on
    popularity: torch.Tensor  # (N+1,) positive events per item in the training split (cold-user fallback)

    def checkpoint(self) -> dict[str, Any]:
        return to_checkpoint(
            self.model,
            {
                "vocab": self.vocab.to_dict(),
                "data_version": dict(self.data_version),
                "popularity": self.popularity.detach().cpu().to(torch.float64),
            },
        )

    def save(self, path: str) -> None:
        torch.save(self.checkpoint(), path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "Recommender":
        return cls(
            from_checkpoint(ckpt), ItemVocab.from_dict(ckpt["vocab"]), dict(ckpt["data_version"]), ckpt["popularity"]
        )

    @classmethod
    def load(cls, path: str) -> "Recommender":
        """Load on CPU; ``weights_only`` so a checkpoint can never run code."""
        return cls.from_checkpoint(torch.load(path, map_location="cpu", weights_only=True))


@torch.no_grad()
def user_vectors(
    rec: Recommender, users: EncodedSequences | list[Events], device: torch.device | str = "cpu", batch_size: int = 256
) -> tuple[torch.Tensor, list[list[int]]]:
    """(U, d) state after each user's newest known event, and each user's known item indices; ``users`` are
    raw events (encoded here with the model's vocabulary) or already encoded with it.

    A user none of whose items the model knows gets a zero row (:func:`models.ranking.model_scorer` ranks it by
    popularity)."""
    seqs = users if isinstance(users, EncodedSequences) else encode_sequences(users, rec.vocab)
    rec.model.eval()
    vecs, seen = [], []
    for s in range(0, len(seqs), batch_size):
        enc = seqs.rows(s, min(s + batch_size, len(seqs)))
        batch = {k: v.to(device) for k, v in enc.last_inputs(rec.model.cfg.max_len).items()}
        h = rec.model.encode(batch)[:, -1].float()  # (b, d): newest position is always the last
        known = torch.from_numpy(enc.lengths() > 0).to(device)  # (b,)
        vecs.append(h * known[:, None])
        seen.extend(enc.item_lists())
    d = rec.model.cfg.d_model
    return (torch.cat(vecs) if vecs else torch.zeros(0, d, device=device)), seen


@torch.no_grad()
def recommend(
    rec: Recommender,
    users: EncodedSequences | list[Events],
    k: int,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    allowed: torch.Tensor | None = None,
    exclude: list[list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` item indices (U, k) and scores (U, k) over the full catalogue (restricted to ``allowed``,
    (N+1,) bool, when given), each user's known items excluded (or, when given, each user's ``exclude`` item
    indices instead, e.g. everything they saw in the look-back); index 0 / -inf fill the tail when fewer
    than k items are left. ``users`` as in :func:`user_vectors`."""
    vecs, known = user_vectors(rec, users, device, batch_size)
    if exclude is not None and len(exclude) != len(known):
        raise ValueError(f"exclude has {len(exclude)} rows for {len(known)} users; pass one list per user")
    scorer = model_scorer(rec.model, rec.popularity, vecs, [bool(s) for s in known], allowed)
    seen = known if exclude is None else exclude
    top_idx, top_score, _ = rank_catalogue(
        scorer, len(seen), rec.vocab.n_items + 1, seen, k, user_batch=batch_size, device=device
    )
    return top_idx, top_score
