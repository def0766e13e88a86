"""The item vocabulary: item id <-> model index (1..N, 0 = padding) and the content each item row carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

YEAR_MIN, YEAR_STEP, N_YEAR_BUCKETS = 1900, 5, 32


def year_bucket(year: int | None) -> int:
    """0 = unknown; else 5-year buckets from 1900 (earlier years share bucket 1, later ones the last)."""
    if year is None:
        return 0
    return 1 + min(max((int(year) - YEAR_MIN) // YEAR_STEP, 0), N_YEAR_BUCKETS - 2)


@dataclass
class ItemVocab:
    """item_id <-> item_idx (1..N, 0 = padding) plus the content each model row carries."""

    item_ids: list[str]  # item_ids[i - 1] has index i
    categories: list[str]  # categories[j - 1] has index j
    item_categories: list[list[int]]  # per item index 1..N (position i - 1)
    item_years: list[int]  # year bucket per item index 1..N
    index: dict[str, int] = field(init=False, repr=False)
    _arrow_ids: Any = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self.index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def max_categories(self) -> int:
        return max([1, *(len(c) for c in self.item_categories)])

    @classmethod
    def from_items(cls, rows: list[dict[str, Any]]) -> "ItemVocab":
        """Build from features/items rows; the table's item_idx is the model index (it is contiguous 1..N)."""
        rows = sorted(rows, key=lambda r: r["item_idx"])
        got = [r["item_idx"] for r in rows]
        if got != list(range(1, len(rows) + 1)):
            raise ValueError(
                f"features/items item_idx is not contiguous 1..{len(rows)} (starts {got[:5]}); re-run featurize"
            )
        categories = sorted({c for r in rows for c in (r.get("categories") or []) if c is not None})
        cat_index = {c: j + 1 for j, c in enumerate(categories)}
        return cls(
            item_ids=[r["item_id"] for r in rows],
            categories=categories,
            item_categories=[
                sorted({cat_index[c] for c in (r.get("categories") or []) if c is not None}) for r in rows
            ],
            item_years=[year_bucket(r.get("year")) for r in rows],
        )

    def content_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N+1, C) category indices and (N+1,) year buckets, row 0 = padding, for ItemEncoder.set_content."""
        cats = torch.zeros(self.n_items + 1, self.max_categories, dtype=torch.long)
        for i, cs in enumerate(self.item_categories, start=1):
            if cs:
                cats[i, : len(cs)] = torch.tensor(cs)
        years = torch.tensor([0, *self.item_years], dtype=torch.long)
        return cats, years

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_ids": list(self.item_ids),
            "categories": list(self.categories),
            "item_categories": [list(c) for c in self.item_categories],
            "item_years": list(self.item_years),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ItemVocab":
        return cls(d["item_ids"], d["categories"], d["item_categories"], d["item_years"])

    def arrow_ids(self) -> Any:
        """The item ids as a pyarrow array (position i - 1 = index i), for vectorised lookups; built once."""
        if self._arrow_ids is None:
            import pyarrow as pa

            self._arrow_ids = pa.array(self.item_ids, type=pa.string())
        return self._arrow_ids
