"""The attention recommender: a causal self-attention encoder over a user's behaviour sequence (SASRec family).

Reads top to bottom: the config, the item encoder (id + content), the per-position input embedding
(item, event type, dwell strength, time gap, position), one pre-LN transformer block, the full model,
and the self-describing checkpoint. Conventions:

* index 0 is padding in every vocabulary (items, categories, year buckets, event types, buckets);
* sequences are LEFT padded, oldest -> newest, so the newest event is always at position ``L - 1``;
* padding never changes the output of a real position: pad keys are masked out of attention and the
  position embedding counts from the user's first real event, not from the left edge of the tensor;
* scores are tied to the item representations (id embedding + content) plus a learned per-item bias,
  so an item's content already places it in the same space as the user states;
* ``forward`` takes tensors already on their device; devices, dtypes and seeds are chosen by callers;
* ``ModelConfig.id_only`` builds plain SASRec (item id + position only), the ablation every run reports;
* item text (``ModelConfig.text_dim`` > 0): a fixed pretrained vector per item (features/item_text), projected
  into the model's space and added to the item's content, so an item with a title and no events still has a
  meaningful vector; with it, items with no positive training event ("cold", ``ItemEncoder.item_warm`` false) are
  scored by their content alone (their id embedding and bias were never trained as a target, only pushed down).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CHECKPOINT_FORMAT = "attnrec-sasrec/1"


@dataclass
class ModelConfig:
    """Sizes of every vocabulary and of the network. Vocabulary sizes count the padding index 0. No size has a
    default here: models.config.build_model fills them from the item vocabulary, the bucketing of
    models.encoding and the training config (whose defaults are the only ones)."""

    n_items: int  # real items; the item vocabulary has n_items + 1 rows (0 = padding)
    n_categories: int  # real categories; + 1 rows (0 = padding / none)
    max_categories: int  # width of the per-item category buffer (the most categories one item has, >= 1)
    n_years: int  # year buckets including 0 = unknown (see models.vocab.year_bucket)
    n_event_types: int  # real event types; + 1 rows (0 = padding)
    n_dwell_buckets: int  # including 0 = padding and 1 = dwell unknown
    n_gap_buckets: int  # including 0 = padding and 1 = first event (no previous)
    max_len: int  # longest sequence the position embedding covers
    d_model: int
    n_heads: int
    n_layers: int
    dropout: float
    id_only: bool = False  # plain SASRec (the ablation): item id + position only, no content/event/dwell/gap
    n_attention_buckets: int = 0  # including 0 = padding and 1 = unknown; 0: no attention input (older checkpoints)
    attention_blind: bool = False  # the dwell- and rating-blind variant: neither dwell nor attention is read
    # context inputs (models.encoding.CONTEXT_COLUMNS), buckets counting 0 = padding, 1 = unknown; 0: not read
    n_hour_buckets: int = 0
    n_weekday_buckets: int = 0
    n_session_buckets: int = 0
    n_heat_buckets: int = 0  # the item's heat as of the event
    n_item_week_buckets: int = 0  # the item's positive interactions in the 7 days before the event
    n_activity_buckets: int = 0  # the user's events in the 7 days before the event
    n_device_buckets: int = 0  # the event's device, hashed
    text_dim: int = 0  # width of the pretrained item text vectors (features/item_text); 0 = no text input

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; pick d_model = k * n_heads"
            )
        if self.n_items < 1:
            raise ValueError(f"n_items={self.n_items}: the item table is empty; featurize items before training")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class ItemEncoder(nn.Module):
    """Item representation = id embedding + content (mean of category embeddings + year-bucket embedding + the
    projection of the item's pretrained text vector when ``cfg.text_dim`` > 0; with text, cold items drop the id).

    Content comes from per-item buffers filled from the item table, so it travels in the state_dict; so does
    ``item_warm`` (items with a positive training event; all true until :meth:`set_warm`). With ``cfg.id_only``
    there are no content embeddings and the representation is the id embedding alone, for every item.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.id_only = cfg.id_only
        self.id_emb = nn.Embedding(cfg.n_items + 1, cfg.d_model, padding_idx=0)
        if not cfg.id_only:
            self.cat_emb = nn.Embedding(cfg.n_categories + 1, cfg.d_model, padding_idx=0)
            self.year_emb = nn.Embedding(cfg.n_years, cfg.d_model, padding_idx=0)
        self.register_buffer("item_categories", torch.zeros(cfg.n_items + 1, cfg.max_categories, dtype=torch.long))
        self.register_buffer("item_year", torch.zeros(cfg.n_items + 1, dtype=torch.long))
        self.register_buffer("item_warm", torch.ones(cfg.n_items + 1, dtype=torch.bool))
        self.text_dim = 0 if cfg.id_only else cfg.text_dim
        if self.text_dim:
            self.text_proj = nn.Linear(cfg.text_dim, cfg.d_model, bias=False)
            self.register_buffer("item_text", torch.zeros(cfg.n_items + 1, cfg.text_dim))

    def set_text(self, item_text: torch.Tensor) -> None:
        """Fill the text buffer: (N+1, text_dim) pretrained vectors, row 0 and items without text all zero."""
        if not self.text_dim or item_text.shape != self.item_text.shape:
            want = tuple(self.item_text.shape) if self.text_dim else "none (text_dim=0)"
            raise ValueError(f"item text of shape {tuple(item_text.shape)} does not match the config's {want}")
        self.item_text.copy_(item_text)

    def set_warm(self, warm: torch.Tensor) -> None:
        """Mark the items that had a positive training event, (N+1,) bool; the others are scored by content alone."""
        if warm.shape != self.item_warm.shape:
            raise ValueError(f"warm mask of shape {tuple(warm.shape)} is not {tuple(self.item_warm.shape)}")
        self.item_warm.copy_(warm.bool())

    def set_content(self, item_categories: torch.Tensor, item_year: torch.Tensor) -> None:
        """Fill the content buffers: (N+1, C) category indices (0 = none) and (N+1,) year buckets."""
        if item_categories.shape != self.item_categories.shape or item_year.shape != self.item_year.shape:
            raise ValueError(
                f"content buffers of shape {tuple(item_categories.shape)}, {tuple(item_year.shape)} do not match the "
                f"config {tuple(self.item_categories.shape)}, {tuple(self.item_year.shape)}; build both from one vocab"
            )
        self.item_categories.copy_(item_categories)
        self.item_year.copy_(item_year)

    def content(self, idx: torch.Tensor) -> torch.Tensor:
        cats = self.item_categories[idx]  # (..., C)
        n = (cats > 0).sum(-1, keepdim=True).clamp(min=1)  # (..., 1)
        cat_mean = self.cat_emb(cats).sum(-2) / n  # (..., d); padding rows are zero
        out = cat_mean + self.year_emb(self.item_year[idx])  # (..., d)
        if self.text_dim:
            out = out + self.text_proj(self.item_text[idx])  # (..., text_dim) -> (..., d)
        return out

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.id_emb(idx)  # (..., d)
        if self.text_dim:
            out = out * self.item_warm[idx].unsqueeze(-1)  # (..., d); a cold item is its content alone
        if not self.id_only:
            out = out + self.content(idx)  # (..., d)
        return out * (idx > 0).unsqueeze(-1)  # the padding item is exactly zero

    def table(self) -> torch.Tensor:
        """Every item's representation, row 0 = padding: (N+1, d)."""
        return self.forward(torch.arange(self.id_emb.num_embeddings, device=self.id_emb.weight.device))


class InputEmbedding(nn.Module):
    """What one position carries: item + event type + dwell bucket + time gap + attention strength + position
    (item + position only with ``cfg.id_only``; no dwell and no attention with ``cfg.attention_blind``)."""

    def __init__(self, cfg: ModelConfig, items: ItemEncoder) -> None:
        super().__init__()
        self.items = items
        self.id_only = cfg.id_only
        if not cfg.id_only:
            self.type_emb = nn.Embedding(cfg.n_event_types + 1, cfg.d_model, padding_idx=0)
            self.dwell_emb = nn.Embedding(cfg.n_dwell_buckets, cfg.d_model, padding_idx=0)
            self.gap_emb = nn.Embedding(cfg.n_gap_buckets, cfg.d_model, padding_idx=0)
            if cfg.n_attention_buckets and not cfg.attention_blind:
                self.attn_emb = nn.Embedding(cfg.n_attention_buckets, cfg.d_model, padding_idx=0)
        self.context = [
            name
            for name, n in (
                ("hour", cfg.n_hour_buckets),
                ("weekday", cfg.n_weekday_buckets),
                ("session", cfg.n_session_buckets),
                ("heat", cfg.n_heat_buckets),
                ("item_week", cfg.n_item_week_buckets),
                ("activity", cfg.n_activity_buckets),
                ("device", cfg.n_device_buckets),
            )
            if n and not cfg.id_only
        ]
        for name in self.context:
            n = getattr(cfg, f"n_{name}_buckets")
            setattr(self, f"{name}_emb", nn.Embedding(n, cfg.d_model, padding_idx=0))
        self.reads_dwell = not cfg.id_only and not cfg.attention_blind
        self.reads_attention = not cfg.id_only and bool(cfg.n_attention_buckets) and not cfg.attention_blind
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.max_len = cfg.max_len
        self.drop = nn.Dropout(cfg.dropout)
        self.masked: set[str] = set()  # inputs read as unknown (bucket 1) at every real position: models.ablation

    def reads(self, column: str) -> bool:
        """Whether this embedding reads the batch column ``column`` (an ablation can mask it)."""
        return {
            "event_types": not self.id_only,
            "gap": not self.id_only,
            "dwell": self.reads_dwell,
            "attention": self.reads_attention,
            **{name: True for name in self.context},
        }.get(column, False)

    def column(self, batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        values = batch[name]
        return (values > 0).long() if name in self.masked else values  # 1 = unknown wherever there is an event

    def forward(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        # position counted from the first real event, so left padding never shifts it
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0, max=self.max_len - 1)  # (B, L)
        x = self.items(batch["items"]) + self.pos_emb(pos)  # (B, L, d)
        if not self.id_only:
            x = x + self.type_emb(batch["event_types"]) + self.gap_emb(self.column(batch, "gap"))
        if self.reads_dwell:
            x = x + self.dwell_emb(self.column(batch, "dwell"))
        if self.reads_attention and "attention" in batch:
            x = x + self.attn_emb(self.column(batch, "attention"))
        for name in self.context:
            if name in batch:
                x = x + getattr(self, f"{name}_emb")(self.column(batch, name))
        return self.drop(x) * mask.unsqueeze(-1)  # (B, L, d); padding rows zero


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, L, d)
        q, k, v = (t.view(B, L, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, h, L, dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, L, dh)
        return self.proj(y.transpose(1, 2).reshape(B, L, d))  # (B, L, d)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model),
            nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), attn_mask))  # (B, L, d)
        return x + self.mlp(self.ln2(x))  # (B, L, d)


class AttentionRecommender(nn.Module):
    """SASRec-family next-item model. ``batch`` holds four (B, L) long tensors, left padded:
    ``items``, ``event_types``, ``dwell``, ``gap`` (see models.encoding for the bucketing)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = ItemEncoder(cfg)
        self.embed = InputEmbedding(cfg, self.items)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.item_bias = nn.Parameter(torch.zeros(cfg.n_items + 1))  # (N+1,) learned per-item prior
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style: residual projections scaled by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden state after each position: (B, L, d). Row t summarises events 0..t only."""
        mask = batch["event_types"] > 0  # (B, L) real events
        L = mask.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()  # (L, L)
        eye = torch.eye(L, dtype=torch.bool, device=mask.device)  # a pad query attends to itself: no empty rows
        attn_mask = (causal & mask[:, None, :]) | eye  # (B, L, L) query x key
        attn_mask = attn_mask[:, None]  # (B, 1, L, L), broadcast over heads
        x = self.embed(batch, mask)  # (B, L, d)
        for block in self.blocks:
            x = block(x, attn_mask)  # (B, L, d)
        return self.ln_f(x)  # (B, L, d)

    def item_table(self) -> torch.Tensor:
        """Output item vectors the hidden states are scored against: (N+1, d)."""
        return self.items.table()

    def cold_items(self, idx: torch.Tensor | None = None) -> torch.Tensor | None:
        """True for the cold items of a model with text, (N+1,) or of ``idx``; None for a model without text.
        Training leaves them out of the softmax: an item no one could have picked yet is no evidence against its
        title, and as a negative in every step it would teach the text projection to bury every new title."""
        if not self.items.text_dim:
            return None
        return ~(self.items.item_warm if idx is None else self.items.item_warm[idx])

    def item_biases(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The learned per-item prior, (N+1,) or of ``idx`` only (no catalogue-wide tensor, for sampled softmax);
        with text, zero for cold items (without, a cold item keeps the low bias training gave it)."""
        bias = self.item_bias if idx is None else self.item_bias[idx]
        if not self.items.text_dim:
            return bias
        return bias * (self.items.item_warm if idx is None else self.items.item_warm[idx])

    def scores(self, hidden: torch.Tensor, table: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Scores of items start..end-1 given hidden states (..., d) and :meth:`item_table` (N+1, d):
        dot product plus the item's bias, (..., end - start)."""
        end = table.shape[0] if end is None else end
        bias = self.item_biases()[start:end]  # (end - start,)
        if hidden.dim() == 2:  # one fused multiply-add: no second pass over the (T, end - start) block
            return torch.addmm(bias, hidden, table[start:end].T)  # (T, end - start)
        return hidden @ table[start:end].T + bias  # (..., end - start)

    def item_scores(self, hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Scores of the items ``idx`` (K,) only, for hidden states (T, d): (T, K). Builds K item vectors,
        never the whole table, so its cost does not grow with the catalogue (sampled softmax)."""
        return hidden @ self.items(idx).T + self.item_biases(idx)  # (T, K)

    def target_scores(self, hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Score of one item per hidden state: hidden (T, d), idx (T,) -> (T,)."""
        return (hidden * self.items(idx)).sum(-1) + self.item_biases(idx)  # (T,)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every item after every position: (B, L, N+1). Column 0 is padding; callers mask it."""
        return self.scores(self.encode(batch), self.item_table())  # (B, L, N+1)


def to_checkpoint(model: AttentionRecommender, extra: dict[str, Any]) -> dict[str, Any]:
    """A self-describing checkpoint: format, config, weights (content buffers included), plus ``extra``
    (the item vocabulary and data version, see models.recommender)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "config": asdict(model.cfg), "state_dict": state, **extra}


def from_checkpoint(ckpt: dict[str, Any]) -> AttentionRecommender:
    """Rebuild the model (in eval mode, on CPU) from :func:`to_checkpoint`'s dict alone."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint format {ckpt.get('format')!r} is not {CHECKPOINT_FORMAT!r}; "
            "retrain with this version of models/"
        )
    model = AttentionRecommender(ModelConfig.from_dict(ckpt["config"]))
    state = dict(ckpt["state_dict"])
    for key, value in model.state_dict().items():  # written before cold items (the encoder is under two names)
        if key.endswith("item_warm"):
            state.setdefault(key, value)  # every item warm
    model.load_state_dict(state)
    return model.eval()
