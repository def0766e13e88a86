"""Keyed pseudonyms of user ids, and the one secret key they are made with.

``pseudonym(user_id, key)`` is the contract of DESIGN.md "Privacy": the first 32 lowercase hex characters of
HMAC-SHA256(key, UTF-8 bytes of the trimmed user id). Trimmed means leading and trailing ASCII spaces removed,
exactly what Spark's ``trim`` does to ids in the clean job, so a raw id and its clean id get the same pseudonym
(a tab or a no-break space is part of the id, as it is in clean). Without the key nobody can recompute a pseudonym
from an id, so pseudonymous datasets do not reveal who is who; with it, a support engineer can
(``attnrec pseudonym USER_ID``).

The key is ``ATTNREC_PSEUDONYM_KEY`` (:mod:`attnrec.settings`); the key's bytes are its ASCII text. Unset on the
embedded default, :func:`pseudonym_key` creates a random one once in ``<data root>/_secrets/pseudonym.key``
(directory 0700, file 0600) and reuses it; two processes that race to create it agree on one. The key lives with
the lake whose pseudonyms it made. No function here logs or puts the key in an error message.

For Spark: PySpark 4.2 has no HMAC function (``hmac`` is proposed for 4.3, SPARK-53154), and a key written into a
SQL literal would sit in the query plan for anyone who reads it, so a job takes :func:`pseudonymizer` into a pandas
UDF: ``series.map(pseudonymizer(key))``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretBytes

from attnrec import lake
from attnrec.settings import NEW_PSEUDONYM_KEY, Settings, pseudonym_key_problem

#: Hex characters of a pseudonym (128 bits of the HMAC).
PSEUDONYM_CHARS = 32
#: Where the embedded default keeps its generated key, relative to the lake root.
KEY_FILE = Path("_secrets") / "pseudonym.key"
_SETTING = "ATTNREC_PSEUDONYM_KEY"
#: Beside the identity table: the fingerprint of the key the lake's pseudonyms were made with (never the key).
FINGERPRINT_FILE = "identity/_key_fingerprint.json"
_FINGERPRINT_MESSAGE = b"attnrec pseudonym key fingerprint v1"


def _secret(key: SecretBytes | bytes) -> bytes:
    return key.get_secret_value() if isinstance(key, SecretBytes) else key


def pseudonymizer(key: SecretBytes | bytes) -> Callable[[str], str]:
    """``user_id -> pseudonym`` under ``key``, with the key's HMAC state prepared once: for many ids, e.g. a pandas
    UDF's ``series.map(pseudonymizer(key))``."""
    secret = _secret(key)
    if not secret:
        raise ValueError(f"the pseudonym key is empty; set {_SETTING} (make one with {NEW_PSEUDONYM_KEY})")
    keyed = hmac.new(secret, digestmod=hashlib.sha256)

    def pseudonym_of(user_id: str) -> str:
        if not isinstance(user_id, str):
            raise ValueError(f"a user id must be a string, not {type(user_id).__name__}; pass its text, e.g. '42'")
        mac = keyed.copy()
        mac.update(user_id.strip(" ").encode("utf-8"))
        return mac.hexdigest()[:PSEUDONYM_CHARS]

    return pseudonym_of


def pseudonym(user_id: str, key: SecretBytes | bytes) -> str:
    """The pseudonym of one raw user id: first 32 lowercase hex characters of HMAC-SHA256(key, trimmed id)."""
    return pseudonymizer(key)(user_id)


def key_file(settings: Settings) -> Path:
    """The generated key's file under the (local) lake root."""
    return settings.local_data_root / KEY_FILE


def pseudonym_key(settings: Settings, create: bool = True) -> SecretBytes:
    """The key: ``ATTNREC_PSEUDONYM_KEY`` when set, else the lake's key file, created on first use (``create``;
    without it a missing file is an error: a support tool must not invent a key that made no pseudonym).

    Raises ValueError naming the setting (or the file) and the fix, never the key: when the lake is not a local
    path (set the variable there), or when the key file is missing (``create=False``), not owner-only or holds no
    usable key.
    """
    if settings.pseudonym_key is not None:
        return SecretBytes(settings.pseudonym_key.get_secret_value().encode("ascii"))
    if not settings.is_local_lake:
        raise ValueError(
            f"{_SETTING} is not set and the lake root {settings.data_root} is not a local path, where a key file "
            f"could be created; set {_SETTING} to a secret of {NEW_PSEUDONYM_KEY}, the same for every service"
        )
    path = key_file(settings)
    if not path.exists():
        if not create:
            raise ValueError(
                f"{_SETTING} is not set and the lake at {settings.data_root} has no key file {KEY_FILE} yet; set "
                f"{_SETTING} as the pipeline's services have it, or point ATTNREC_DATA_ROOT (--data-root) at the lake "
                "the pipeline writes"
            )
        try:
            _create_once(path)
        except OSError as err:  # a read-only lake, a file system without hard links
            raise ValueError(
                f"could not create the pseudonym key file {path} ({err.strerror or err}); set {_SETTING} to a "
                f"secret of {NEW_PSEUDONYM_KEY} instead"
            ) from None
    return SecretBytes(_read_key_file(path).encode("ascii"))


def _create_once(path: Path) -> None:
    """Write a new random key to ``path`` unless another process got there first; either way, one key remains.

    The key is written and synced under a temporary name, then hard-linked to ``path``: the link either creates
    ``path`` complete or fails because it exists, so no reader ever sees a half-written key and a racing
    process keeps the winner's key.
    """
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.parent.mkdir(mode=0o700)
        path.parent.chmod(0o700)  # whatever the umask
    except FileExistsError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: its key is the key
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"the pseudonym key file {path} can be read by other users (mode {mode:o}); run: chmod 600 {path}"
        )
    key = path.read_text(encoding="ascii", errors="replace").strip()
    problem = pseudonym_key_problem(key)
    if problem:
        raise ValueError(
            f"the pseudonym key file {path} does not hold a usable key: it {problem}. Restore the file from a "
            f"backup, or set {_SETTING}; delete it only if no pseudonymous data exists yet (a new key changes "
            "every pseudonym)"
        )
    return key


def key_fingerprint(key: SecretBytes | bytes) -> str:
    """16 hex characters that tell keys apart without revealing them: HMAC-SHA256(key, a fixed message), which
    no user id can equal (it is not a pseudonym of anything a user could be called)."""
    return hmac.new(_secret(key), _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]


def lake_key(settings: Settings) -> SecretBytes:
    """The key for a job that reads or writes the lake's pseudonyms, checked against the fingerprint the lake
    recorded when its first pseudonym was written (``identity/_key_fingerprint.json``; recorded now when absent).

    Raises ValueError, before anything is written, when the key differs from the recorded one (a wrong
    ``ATTNREC_PSEUDONYM_KEY``, a replaced key file) or from the one the erased-users list was made under, or is
    missing (a lake with pseudonyms never gets a new key file made up for it): the message names the setting, the
    file and the fix, never the key.
    """
    uri = lake.join(settings.data_root, FINGERPRINT_FILE)
    recorded = lake.read_json(uri).get("fingerprint") if lake.exists(uri) else None
    listed = erased_list_fingerprint(settings.data_root)
    # a lake with pseudonyms, or with erased users, never gets a new key file made up for it
    key = pseudonym_key(settings, create=recorded is None and listed is None)
    found = key_fingerprint(key)
    if recorded is not None and found != recorded:
        raise ValueError(
            f"the pseudonym key ({_SETTING} or the lake's key file) is not the key the pseudonyms under "
            f"{settings.data_root} were made with (its fingerprint differs from {uri}); set {_SETTING} to the "
            "key the pipeline's services use, or rotate the key as docs/privacy.md#rotating-the-key says. "
            "Nothing was written"
        )
    if listed is not None and found != listed:
        raise ValueError(
            f"the pseudonym key ({_SETTING} or the lake's key file) is not the key the erased-users list "
            f"{lake.join(settings.data_root, ERASED_USERS_FILE)} was made with, and that list cannot be rebuilt "
            "under a new key (the erased users' ids are gone), so later events of erased users could no longer be "
            "quarantined; set the key the list was made with, or, to rotate anyway, follow "
            "docs/privacy.md#rotating-the-key-after-erasures. Nothing was written"
        )
    if recorded is None:
        lake.write_json(uri, {"fingerprint": found, "pseudonym": "hmac-sha256, first 32 hex characters"})
    return key


#: The erased-users list: one SHA-256 of each erased user's pseudonym (never the pseudonym, never the id), so clean
#: can quarantine a later event of an erased user as ``erased_user``; the key fingerprint rides in its metadata.
ERASED_USERS_FILE = "erasure/erased_users.parquet"
ERASED_COLUMN = "pseudonym_sha256"
_ERASED_KEY_META = b"attnrec.key_fingerprint"


def erased_tag(pseudonym_: str) -> str:
    """What the erased-users list holds for a pseudonym: its SHA-256 in hex (Spark: ``sha2(pseudonym, 256)``)."""
    return hashlib.sha256(pseudonym_.encode("utf-8")).hexdigest()


def erased_list_fingerprint(root: str) -> str | None:
    """The fingerprint of the key the erased-users list was made under; None when nobody was erased yet."""
    import pyarrow.parquet as pq

    uri = lake.join(root, ERASED_USERS_FILE)
    if not lake.exists(uri):
        return None
    filesystem, path = lake.filesystem_for(uri)
    metadata = pq.read_schema(path, filesystem=filesystem).metadata or {}
    return metadata.get(_ERASED_KEY_META, b"").decode() or None


def read_erased(root: str) -> set[str]:
    """The tags (:func:`erased_tag`) of every erased user; empty when nobody was erased."""
    import pyarrow.parquet as pq

    uri = lake.join(root, ERASED_USERS_FILE)
    if not lake.exists(uri):
        return set()
    filesystem, path = lake.filesystem_for(uri)
    return set(pq.read_table(path, columns=[ERASED_COLUMN], filesystem=filesystem).column(0).to_pylist())


def add_erased(root: str, tags: set[str], fingerprint: str) -> int:
    """Add ``tags`` to the erased-users list (written aside, then renamed over the old list); returns how many
    were new. The list records ``fingerprint``: :func:`lake_key` refuses another key while the list exists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    known = read_erased(root)
    new = set(tags) - known
    if not new:
        return 0
    table = pa.table({ERASED_COLUMN: pa.array(sorted(known | new), pa.string())})
    table = table.replace_schema_metadata({_ERASED_KEY_META: fingerprint.encode()})
    uri = lake.join(root, ERASED_USERS_FILE)
    filesystem, path = lake.filesystem_for(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = f"{path.rsplit('/', 1)[0]}/.erased_users.{secrets.token_hex(4)}.parquet"
    pq.write_table(table, tmp, filesystem=filesystem)
    filesystem.move(tmp, path)
    return len(new)
