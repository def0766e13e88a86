"""Where do given strings occur? Every file under a directory, read as data: every parquet file's every column
(values, lists and structs included), every text or gzip file's text, and any other file's bytes (a torch
checkpoint, a SQLite database). A match is the whole string as a token (not inside a longer id)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path


def _pattern(needles: set[str]) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(n.encode()) for n in sorted(needles, key=len, reverse=True))
    return re.compile(rb"(?<![A-Za-z0-9_\-])(?:" + alternatives + rb")(?![A-Za-z0-9_\-])")


def _contents(path: Path) -> bytes:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return "\n".join(repr(v) for column in table.columns for v in column.to_pylist()).encode()
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def scan(root: Path, needles: set[str], skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """{file (relative to root): the needles found in it}, every file under ``root`` but those whose relative path
    starts with one of ``skip``."""
    pattern = _pattern(needles)
    found: dict[str, set[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(skip):
            continue
        hits = {m.decode() for m in pattern.findall(_contents(path))}
        if hits:
            found[rel] = hits
    return found
