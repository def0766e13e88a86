"""The data contracts of DESIGN.md, in one place: event types, field rules, candidates columns."""

from __future__ import annotations

import re

EVENT_TYPES: tuple[str, ...] = (
    "impression",
    "click",
    "view",
    "add_to_cart",
    "purchase",
    "rate",
    "like",
    "dislike",
    "share",
    "skip",
)

#: How each event type reads as interest (features/sequences ``interest``: 1, 0, -1). Exposure means the item was
#: shown, not chosen; the rest are positive interest. ATTNREC_NEGATIVE_EVENT_TYPES / ATTNREC_EXPOSURE_EVENT_TYPES
#: override the defaults.
EXPOSURE_EVENT_TYPES: tuple[str, ...] = ("impression", "skip")
NEGATIVE_EVENT_TYPES: tuple[str, ...] = ("dislike",)
#: Event types after which an item counts as seen (features/sequences ``seen_item_ids``; never served to the user
#: again): every type but the pure exposure ``impression``, so an item that was only shown stays servable.
#: ATTNREC_SEEN_EVENT_TYPES overrides it.
SEEN_EVENT_TYPES: tuple[str, ...] = tuple(t for t in EVENT_TYPES if t != "impression")

REQUIRED_EVENT_FIELDS: tuple[str, ...] = ("event_id", "user_id", "item_id", "event_type", "event_time")
OPTIONAL_EVENT_FIELDS: tuple[str, ...] = ("dwell_ms", "rating", "session_id", "device")

RATING_MIN, RATING_MAX = 0.5, 5.0

#: Columns of candidates/dt=D, in order, with their parquet types.
CANDIDATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("user_id", "string"),
    ("rank", "int32"),
    ("item_id", "string"),
    ("score", "float32"),
    ("model_name", "string"),
    ("model_version", "string"),  # the version that scored the row: the control or the treatment version
    ("arm", "string"),  # CONTROL or TREATMENT (attnrec.experiments.arm of the user)
    ("experiment_id", "string"),  # empty when no experiment runs
)

#: The arms of an A/B experiment (candidates ``arm``, kpis ``arm``).
CONTROL, TREATMENT = "control", "treatment"
ARMS: tuple[str, ...] = (CONTROL, TREATMENT)

#: Columns of kpis/dt=D (one row per experiment_id, arm, model_version), in order, with their parquet types.
KPI_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiment_id", "string"),
    ("arm", "string"),
    ("model_version", "string"),
    ("users", "int64"),
    ("active_users", "int64"),
    ("impressions", "int64"),
    ("clicks", "int64"),
    ("ctr", "double"),
    ("hit_rate_at_10", "double"),
    ("hit_rate_at_k", "double"),
    ("conversion", "double"),
    ("hit_rate_at_10_ci_low", "double"),
    ("hit_rate_at_10_ci_high", "double"),
    ("lift_hit_rate_at_10", "double"),  # treatment rows only (null on control)
    ("p_value", "double"),  # treatment rows only: one-sided two-proportion test, treatment better
    ("coverage", "double"),
    ("novelty", "double"),
    ("intra_list_diversity", "double"),
)

_DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_dt(dt: str) -> str:
    """Validate a partition date ``YYYY-MM-DD`` and return it; raise a ValueError naming the fix."""
    import datetime as _dt

    if not isinstance(dt, str) or not _DT_RE.match(dt):
        raise ValueError(f"partition date {dt!r} is not YYYY-MM-DD; pass the DAG run's logical date, e.g. 2026-01-31")
    try:
        _dt.date.fromisoformat(dt)
    except ValueError:
        raise ValueError(
            f"partition date {dt!r} is not a real calendar date; pass YYYY-MM-DD, e.g. 2026-01-31"
        ) from None
    return dt
