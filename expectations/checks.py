"""The ETL gates beyond the expectation suites: counts that must add up and days that must have been read.

:func:`check_reconciliation` gates the clean job's ``_reconciliation.json`` (raw lines = clean + quarantined +
duplicates, and the quarantine share stays small); :func:`check_lookback` gates featurize's ``_manifest.json``
(every day of the look-back window with raw events was read). Both raise :class:`expectations.runner.GateFailed`
with the counts or days and the fix; jobs/validate.py runs them after the suites.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from expectations.runner import GateFailed

if TYPE_CHECKING:
    from attnrec.settings import Settings


def check_reconciliation(recon: dict, settings: Settings | None = None) -> None:
    """Gate on the clean job's ``_reconciliation.json``: counts add up and quarantine stays small.

    Raises GateFailed when ``raw_lines != clean + quarantined + duplicates`` (rows lost or invented) or
    when ``quarantined / raw_lines`` exceeds ``settings.max_quarantine_share`` (a broken producer).
    """
    from attnrec.settings import get_settings

    settings = settings or get_settings()
    missing = [k for k in ("raw_lines", "clean", "quarantined", "duplicates") if k not in recon]
    if missing:
        raise GateFailed(f"reconciliation for dt={recon.get('dt')} lacks {missing}; the clean job must write them")
    dt = recon.get("dt")
    raw, clean, quarantined, dups = (int(recon[k]) for k in ("raw_lines", "clean", "quarantined", "duplicates"))
    reasons = sorted((recon.get("quarantined_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    top = ", ".join(f"{reason}={count}" for reason, count in reasons[:5]) or "none recorded"
    if raw != clean + quarantined + dups:
        raise GateFailed(
            f"reconciliation FAILED for dt={dt}: raw_lines={raw} != clean={clean} + quarantined={quarantined} "
            f"+ duplicates={dups} (= {clean + quarantined + dups}); the clean job lost or invented rows. "
            f"Top quarantine reasons: {top}"
        )
    share = quarantined / raw if raw else 0.0
    if share > settings.max_quarantine_share:
        raise GateFailed(
            f"reconciliation FAILED for dt={dt}: quarantined={quarantined} of raw_lines={raw} is {share:.2%}, "
            f"above the threshold {settings.max_quarantine_share:.2%} (ATTNREC_MAX_QUARANTINE_SHARE="
            f"{settings.max_quarantine_share}). Top quarantine reasons: {top}. Fix the producer, or raise "
            "ATTNREC_MAX_QUARANTINE_SHARE if this share is expected"
        )


def check_lookback(manifest: dict, raw_days: list[str]) -> None:
    """Gate on featurize's ``_manifest.json``: the features of day D were built from every day before it.

    ``raw_days``: the landing days that have raw events. Raises GateFailed when a day of the look-back window
    (``first_dt`` <= d < D) has raw events but its clean partition was not among those featurize read, or when
    the item vocabulary was carried over from a features day older than such a day (its features were not
    published yet): the features of D would silently miss that day. The message names each day and the fix.
    """
    dt, first_dt = manifest["dt"], manifest["first_dt"]
    window = sorted(d for d in raw_days if first_dt <= d < dt)
    read = {day["dt"] for day in manifest["clean_days"]}
    vocab_dt = (manifest.get("items_vocabulary_from") or {}).get("dt") or ""
    problems = [
        f"dt={d} has raw events but no published clean/events partition was read" for d in window if d not in read
    ]
    problems += [
        f"dt={d} has raw events but its features were not published (item vocabulary carried over from "
        f"{vocab_dt or 'no earlier day'})"
        for d in window
        if d > vocab_dt and d in read
    ]
    if problems:
        first = min(d for d in window if d not in read or d > vocab_dt)
        raise GateFailed(
            f"look-back FAILED for features dt={dt}: " + "; ".join(problems) + f". Run behavior_etl for {first} "
            f"first (and each later day with raw events, oldest first), then re-run behavior_etl for {dt}"
        )
