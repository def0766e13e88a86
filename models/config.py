"""The training configuration and the one function that builds it.

:func:`train_config` is how the DAG, ``attnrec train``, torchrun, the benchmarks and the tests get a
:class:`TrainConfig`: the fields that come from the settings (epochs, wall clock, seed, sequence length,
softmax size, positive event types) are read from :class:`attnrec.settings.Settings`, whose defaults are
the only ones; then ``--set NAME=VALUE`` overrides apply. :func:`build_model` turns a config and an item
vocabulary into a fresh network, so the model's sizes have no defaults of their own either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from attnrec.contracts import EVENT_TYPES
from attnrec.settings import Settings
from models.encoding import CONTEXT_COLUMNS, N_ATTENTION_BUCKETS, N_DWELL_BUCKETS, N_GAP_BUCKETS, positive_types
from models.model import AttentionRecommender, ModelConfig
from models.vocab import N_YEAR_BUCKETS, ItemVocab

#: The spellings ``--set NAME=VALUE`` accepts for a boolean field (any case), as the settings do.
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a training run needs besides the data. The first six fields come from the settings and have
    no default here; the hyper-parameter defaults were chosen on MovieLens-100K validation runs, over several
    seeds, and kept when they also held on test (the runs are in docs/model.md)."""

    epochs: int  # ATTNREC_TRAIN_EPOCHS: at most this many passes over the training sequences
    max_minutes: float  # ATTNREC_TRAIN_MAX_MINUTES: no epoch starts that would end past this wall clock
    seed: int  # ATTNREC_SEED: batches, dropout, initial weights and sampled negatives derive from it
    max_seq_len: int  # ATTNREC_MAX_SEQ_LEN: the longest input sequence (the position embedding's size)
    full_softmax_max_items: int  # ATTNREC_FULL_SOFTMAX_MAX_ITEMS: larger catalogues use sampled softmax + logQ
    positive_types: tuple[str, ...]  # training targets: every event type but ATTNREC_EXPOSURE/NEGATIVE_EVENT_TYPES
    d_model: int = 128  # wider than the SASRec paper's 64: it validated better (docs/model.md)
    n_heads: int = 2
    n_layers: int = 2
    dropout: float = 0.3  # tuned together with mask_seen, which already regularises (docs/model.md)
    batch_size: int = 32  # sequences per optimizer step, over all ranks together
    lr: float = 2e-3
    weight_decay: float = 0.1  # on Linear weights only; embeddings and norms are not decayed
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last epoch
    grad_clip: float = 1.0
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping (validation is noisy)
    n_negatives: int = 1024  # sampled softmax: negatives per step, shared by every position of the batch
    sampling_alpha: float = 0.75  # sampled softmax: Q(item) proportional to (training target count + 1) ** alpha
    mask_seen: bool = True  # leave the items seen so far out of each position's softmax, as serving does
    # read each event's attention strength (features/sequences ``attention``) as an input and weigh each target by
    # it, bounces and low ratings never targets; false: the dwell- and rating-blind variant (docs/model.md)
    attention: bool = True

    def resume_key(self) -> dict[str, Any]:
        """What a checkpoint must have been written with to be resumed: every field but the wall-clock
        budget, which a retry may change."""
        return {k: v for k, v in asdict(self).items() if k != "max_minutes"}


def train_config(settings: Settings, overrides: Sequence[str] = ()) -> TrainConfig:
    """The training config of ``settings`` with ``overrides`` (``["dropout=0.3", "n_layers=3"]``) applied."""
    base = TrainConfig(
        epochs=settings.train_epochs,
        max_minutes=settings.train_max_minutes,
        seed=settings.seed,
        max_seq_len=settings.max_seq_len,
        full_softmax_max_items=settings.full_softmax_max_items,
        positive_types=positive_types(settings.exposure_event_types, settings.negative_event_types),
    )
    return parse_overrides(overrides, base)


def parse_overrides(pairs: Sequence[str], base: TrainConfig) -> TrainConfig:
    """``base`` with ``["dropout=0.3", "n_layers=3"]`` applied, each value typed like the field; a boolean
    takes one of :data:`TRUE_WORDS` / :data:`FALSE_WORDS`, a tuple a comma-separated list."""
    kinds = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in kinds:
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE with NAME one of {sorted(kinds)}")
        kind = kinds[name]
        if kind is bool:
            word = raw.strip().lower()
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(
                    f"--set {pair!r}: {raw!r} is not a boolean; use one of "
                    f"{', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}"
                )
            changes[name] = word in TRUE_WORDS
        elif kind is tuple:
            changes[name] = tuple(v.strip() for v in raw.split(",") if v.strip())
        else:
            try:
                changes[name] = kind(raw)
            except ValueError:
                raise ValueError(f"--set {pair!r}: {raw!r} is not a valid {kind.__name__}") from None
    return dataclasses.replace(base, **changes)


def build_model(
    vocab: ItemVocab, tcfg: TrainConfig, *, id_only: bool = False, item_text: torch.Tensor | None = None
) -> AttentionRecommender:
    """A fresh model sized for ``vocab`` and ``tcfg`` with its content buffers filled (``id_only``: plain
    SASRec, the ablation; ``item_text``: (N+1, D) pretrained text vectors, models.features.read_item_text, read
    through a projection; ignored with ``id_only``)."""
    cfg = ModelConfig(
        n_items=vocab.n_items,
        n_categories=len(vocab.categories),
        max_categories=vocab.max_categories,
        n_years=N_YEAR_BUCKETS,
        n_event_types=len(EVENT_TYPES),
        n_dwell_buckets=N_DWELL_BUCKETS,
        n_gap_buckets=N_GAP_BUCKETS,
        max_len=tcfg.max_seq_len,
        d_model=tcfg.d_model,
        n_heads=tcfg.n_heads,
        n_layers=tcfg.n_layers,
        dropout=tcfg.dropout,
        id_only=id_only,
        n_attention_buckets=N_ATTENTION_BUCKETS,
        attention_blind=not tcfg.attention,
        **{f"n_{name}_buckets": n for _, name, n, _ in CONTEXT_COLUMNS},
        text_dim=0 if item_text is None or id_only else int(item_text.shape[1]),
    )
    model = AttentionRecommender(cfg)
    model.items.set_content(*vocab.content_tensors())
    if cfg.text_dim:
        model.items.set_text(item_text)
    return model
