"""Where do given strings occur? Every file under a directory, read as data: every parquet file's every column
(values, lists and structs included), every text or gzip file's text, and any other file's bytes (a torch
checkpoint, a SQLite database). A match is the whole string as a token (not inside a longer id). In bytes that
are not text (a font, an image, a checkpoint's tensors) a short needle such as ``u38`` turns up by chance, so
there only needles of 16 characters or more (pseudonyms) are looked for; a pickle's or SQLite's strings are
still found because those files are searched for the long needles, and text for all of them."""

from __future__ import annotations

import gzip
import re
from pathlib import Path


def _pattern(needles: set[str]) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(n.encode()) for n in sorted(needles, key=len, reverse=True))
    return re.compile(rb"(?<![A-Za-z0-9_\-])(?:" + alternatives + rb")(?![A-Za-z0-9_\-])")


def _contents(path: Path) -> tuple[bytes, bool]:
    """(the file's data, whether it is text)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return "\n".join(repr(v) for column in table.columns for v in column.to_pylist()).encode(), True
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data, False
    return data, True


def scan(root: Path, needles: set[str], skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """{file (relative to root): the needles found in it}, every file under ``root`` but those whose relative path
    starts with one of ``skip``."""
    text_pattern = _pattern(needles)
    long_needles = {n for n in needles if len(n) >= 16}
    binary_pattern = _pattern(long_needles) if long_needles else None
    found: dict[str, set[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(skip):
            continue
        data, is_text = _contents(path)
        pattern = text_pattern if is_text else binary_pattern
        hits = {m.decode() for m in pattern.findall(data)} if pattern else set()
        if hits:
            found[rel] = hits
    return found
