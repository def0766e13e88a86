"""Small shared builders of the model tests: item rows, tiny models and batches, event sequences, the
training config (always through models.config.train_config, as every caller builds it)."""

from __future__ import annotations

import dataclasses
import random

import torch

from attnrec.settings import get_settings
from models.config import TrainConfig, build_model, train_config
from models.encoding import Events
from models.model import AttentionRecommender
from models.vocab import ItemVocab


def config(**fields) -> TrainConfig:
    """The settings' training config (:func:`models.config.train_config`) with ``fields`` replaced."""
    return dataclasses.replace(train_config(get_settings()), **fields)


def item_rows(n: int) -> list[dict]:
    cats = ["Action", "Comedy", "Drama"]
    return [
        {
            "item_idx": i,
            "item_id": f"i{i}",
            "title": f"t{i}",
            "categories": [cats[i % 3]] + (["Drama"] if i % 4 == 0 else []),
            "year": None if i % 5 == 0 else 1990 + i,
            "popularity": 0,
        }
        for i in range(1, n + 1)
    ]


def tiny_model(n_items: int = 12, seed: int = 0, dropout: float = 0.0, max_len: int = 16) -> AttentionRecommender:
    torch.manual_seed(seed)
    vocab = ItemVocab.from_items(item_rows(n_items))
    model = build_model(vocab, config(d_model=16, n_heads=2, n_layers=2, dropout=dropout, max_seq_len=max_len))
    return model.eval()


def random_batch(B: int, L: int, n_items: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "items": torch.randint(1, n_items + 1, (B, L), generator=g),
        "event_types": torch.randint(1, 11, (B, L), generator=g),
        "dwell": torch.randint(1, 16, (B, L), generator=g),
        "gap": torch.randint(1, 32, (B, L), generator=g),
        "attention": torch.randint(1, 23, (B, L), generator=g),
        "hour": torch.randint(1, 26, (B, L), generator=g),
        "weekday": torch.randint(1, 9, (B, L), generator=g),
        "session": torch.randint(1, 4, (B, L), generator=g),
        "heat": torch.randint(1, 26, (B, L), generator=g),
        "item_week": torch.randint(1, 26, (B, L), generator=g),
        "activity": torch.randint(1, 26, (B, L), generator=g),
        "device": torch.randint(1, 34, (B, L), generator=g),
    }


def events(user: str, items: list[str], types: list[str] | None = None) -> Events:
    n = len(items)
    return Events(user, items, types or ["rate"] * n, [1000 * (i + 1) for i in range(n)], [None] * n)


def planted_walks(n_items: int = 20, n_users: int = 60, length: int = 6, seed: int = 3) -> list[Events]:
    """Every user walks a fixed permutation of the items: the next item is determined by the current one."""
    rng = random.Random(seed)
    perm = list(range(1, n_items + 1))
    rng.shuffle(perm)
    users = []
    for u in range(n_users):
        s = rng.randrange(n_items)
        users.append(events(f"u{u:03d}", [f"i{perm[(s + j) % n_items]}" for j in range(length)]))
    return users
