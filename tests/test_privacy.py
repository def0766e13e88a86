"""attnrec.privacy: the pseudonym contract, the pseudonym key (setting, generated key file), `attnrec pseudonym`.

Fast unit tests, no Spark. Every expected pseudonym is computed here with hmac/hashlib or is a published HMAC
test vector, never by the code under test.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import SecretBytes, ValidationError
from typer.testing import CliRunner

from attnrec.cli import app
from attnrec.privacy import KEY_FILE, _create_once, pseudonym, pseudonym_key, pseudonymizer
from attnrec.settings import Settings, get_settings

REPO = Path(__file__).resolve().parent.parent
#: A test key (64 hex characters, as `attnrec` generates them); never a real one.
KEY = "3f9c1b7e5a2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"


def expected(user_id_bytes: bytes, key: str = KEY) -> str:
    return hmac.new(key.encode("ascii"), user_id_bytes, hashlib.sha256).hexdigest()[:32]


@pytest.fixture(autouse=True)
def lake(monkeypatch, tmp_path) -> Path:
    """No key in the environment; the lake root is this test's own directory."""
    monkeypatch.delenv("ATTNREC_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    return tmp_path / "lake"


# ---------------------------------------------------------------------------------------------- the contract


def test_rfc_4231_vector_cut_to_32_lowercase_hex_characters():
    # RFC 4231 test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?") = 5bdcc146bf60754e...
    assert pseudonym("what do ya want for nothing?", b"Jefe") == "5bdcc146bf60754e6a042426089575c7"


def test_known_answer_is_the_hmac_of_the_utf8_id():
    value = pseudonym("u42", KEY.encode("ascii"))
    assert value == expected(b"u42")
    assert len(value) == 32 and value == value.lower() and set(value) <= set("0123456789abcdef")
    assert pseudonym("u42", SecretBytes(KEY.encode("ascii"))) == value
    assert pseudonym("u43", KEY.encode("ascii")) != value
    assert pseudonym("u42", (KEY[:-1] + "7").encode("ascii")) != value  # another key, another pseudonym


def test_trimming_removes_ascii_spaces_only_as_spark_trim_does_in_clean():
    key = KEY.encode("ascii")
    assert pseudonym("  u42 ", key) == pseudonym("u42", key) == expected(b"u42")
    assert pseudonym("u 42", key) == expected(b"u 42")  # inner spaces are part of the id
    # Spark's trim (the clean job's) keeps tabs and no-break spaces, so the pseudonym must too
    assert pseudonym("\tu42", key) == expected(b"\tu42") != expected(b"u42")
    assert pseudonym("u42\u00a0", key) == expected("u42\u00a0".encode()) != expected(b"u42")


@pytest.mark.parametrize("user_id", ["José", "Jose\u0301", "用户-七", "ユーザー🙂", "ÅÄÖ-ß"])
def test_unicode_ids_use_their_utf8_bytes_without_normalisation(user_id):
    assert pseudonym(f" {user_id} ", KEY.encode("ascii")) == expected(user_id.encode("utf-8"))


def test_composed_and_decomposed_forms_are_different_ids():
    key = KEY.encode("ascii")
    assert pseudonym("Jos\u00e9", key) != pseudonym("Jose\u0301", key)


def test_pseudonymizer_maps_many_ids_like_pseudonym():
    of = pseudonymizer(KEY.encode("ascii"))
    ids = ["u1", " u2", "u3 ", "Zoë"]
    assert list(map(of, ids)) == [expected(i.strip(" ").encode()) for i in ids]


def test_a_non_string_id_or_an_empty_key_is_refused():
    with pytest.raises(ValueError, match="a user id must be a string, not int"):
        pseudonym(42, KEY.encode("ascii"))
    with pytest.raises(ValueError, match="the pseudonym key is empty; set ATTNREC_PSEUDONYM_KEY"):
        pseudonymizer(b"")


# ------------------------------------------------------------------------------------------------- the key


def test_the_key_from_the_environment_is_used_and_no_file_is_made(monkeypatch, lake):
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", f"  {KEY}\n")  # blanks around it, as an .env may leave them
    key = pseudonym_key(get_settings())
    assert key.get_secret_value() == KEY.encode("ascii")
    assert not (lake / KEY_FILE).exists()


def test_unset_the_key_file_is_created_once_owner_only_and_reused(lake):
    first = pseudonym_key(get_settings())
    path = lake / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text().strip()
    assert len(text) == 64 and set(text) <= set("0123456789abcdef")
    assert first.get_secret_value() == text.encode("ascii")
    assert pseudonym_key(get_settings()) == first
    assert path.read_text().strip() == text
    assert sorted(p.name for p in path.parent.iterdir()) == ["pseudonym.key"]  # no temporary file left


def test_a_process_that_loses_the_race_keeps_the_winners_key(lake):
    path = lake / KEY_FILE
    pseudonym_key(get_settings())
    winner = path.read_text()
    _create_once(path)  # what the second of two racing processes does once the first has linked its key
    assert path.read_text() == winner
    assert sorted(p.name for p in path.parent.iterdir()) == ["pseudonym.key"]


def test_processes_racing_to_create_the_key_agree_on_one(lake):
    """Four processes wait for the same instant, then each asks for the key of an empty lake."""
    start = time.time() + 1.5
    probe = (
        "import hashlib, time; from attnrec.privacy import pseudonym_key; from attnrec.settings import get_settings; "
        f"time.sleep(max(0.0, {start} - time.time())); "
        "print(hashlib.sha256(pseudonym_key(get_settings()).get_secret_value()).hexdigest())"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "ATTNREC_DATA_ROOT": str(lake)}
    procs = [
        subprocess.Popen([sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    digests = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    on_disk = hashlib.sha256((lake / KEY_FILE).read_text().strip().encode("ascii")).hexdigest()
    assert digests == {on_disk}
    assert sorted(p.name for p in (lake / KEY_FILE).parent.iterdir()) == ["pseudonym.key"]


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("abc123-short-key", "is too short (16 characters, at least 32 needed)"),
        ("a" * 20 + " " + "b" * 20, "holds a character that is not printable ASCII"),
        ("é" * 40, "holds a character that is not printable ASCII"),
    ],
)
def test_a_bad_key_fails_naming_the_setting_and_the_fix_never_the_key(monkeypatch, bad, problem):
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", bad)
    with pytest.raises(ValueError) as err:
        get_settings()
    message = str(err.value)
    assert message.startswith(f"ATTNREC_PSEUDONYM_KEY (value hidden) {problem}")
    assert "secrets.token_hex(32)" in message
    assert bad not in message and bad.strip()[:8] not in message
    with pytest.raises(ValidationError) as raw:  # built by hand, pydantic's own message hides it too
        Settings(ATTNREC_PSEUDONYM_KEY=bad)
    assert bad not in str(raw.value) and bad not in repr(raw.value)


def test_the_key_is_never_in_the_settings_repr_str_or_dump(monkeypatch):
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", KEY)
    s = get_settings()
    assert s.pseudonym_key.get_secret_value() == KEY
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump()), repr(pseudonym_key(s))):
        assert KEY not in text


def test_a_world_readable_or_broken_key_file_fails_without_showing_it(lake):
    path = lake / KEY_FILE
    pseudonym_key(get_settings())
    path.chmod(0o644)
    with pytest.raises(ValueError, match=f"can be read by other users \\(mode 644\\); run: chmod 600 {path}"):
        pseudonym_key(get_settings())
    path.write_text("tooshort-secret\n")
    path.chmod(0o600)
    with pytest.raises(ValueError) as err:
        pseudonym_key(get_settings())
    assert f"the pseudonym key file {path} does not hold a usable key: it is too short" in str(err.value)
    assert "tooshort" not in str(err.value)


def test_a_lake_where_no_key_file_can_be_made_fails_naming_the_setting(monkeypatch, lake):
    def no_hard_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("attnrec.privacy.os.link", no_hard_links)  # e.g. a file system without hard links
    with pytest.raises(ValueError) as err:
        pseudonym_key(get_settings())
    assert str(err.value) == (
        f"could not create the pseudonym key file {lake / KEY_FILE} (Operation not permitted); set "
        'ATTNREC_PSEUDONYM_KEY to a secret of python -c "import secrets; print(secrets.token_hex(32))" instead'
    )
    assert list((lake / KEY_FILE).parent.iterdir()) == []  # the temporary key is gone too


def test_a_remote_lake_needs_the_setting(monkeypatch):
    monkeypatch.setenv("ATTNREC_DATA_ROOT", "s3a://bucket/lake")
    with pytest.raises(ValueError, match="ATTNREC_PSEUDONYM_KEY is not set and the lake root s3a://bucket/lake is"):
        pseudonym_key(get_settings())


# ------------------------------------------------------------------------------------------------- the CLI


def invoke(*argv: str):
    return CliRunner().invoke(app, list(argv))


def test_cli_prints_the_pseudonym_and_never_the_key(monkeypatch, lake):
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", KEY)
    result = invoke("pseudonym", " u42 ")
    assert (result.exit_code, result.stdout, result.stderr) == (0, expected(b"u42") + "\n", "")
    assert not (lake / KEY_FILE).exists()


def test_cli_uses_the_lakes_key_file_given_by_data_root(monkeypatch, tmp_path):
    other = tmp_path / "other-lake"
    key = pseudonym_key(get_settings(data_root=str(other))).get_secret_value().decode("ascii")
    result = invoke("pseudonym", "Zoë", "--data-root", str(other))
    assert result.exit_code == 0 and result.stdout == expected("Zoë".encode(), key) + "\n"
    assert key not in result.stdout + result.stderr


def test_cli_never_creates_a_key(lake):
    result = invoke("pseudonym", "u42")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("attnrec pseudonym: ATTNREC_PSEUDONYM_KEY is not set and the lake at ")
    assert "set ATTNREC_PSEUDONYM_KEY as the pipeline's services have it" in result.stderr
    assert not (lake / KEY_FILE).exists()


def test_cli_errors_name_the_fix_and_hide_a_bad_key(monkeypatch):
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", "abc123-short-key")
    result = invoke("pseudonym", "u42")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("attnrec pseudonym: ATTNREC_PSEUDONYM_KEY (value hidden) is too short")
    assert "abc123" not in result.stderr
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", KEY)
    result = invoke("pseudonym", "  ")
    assert (result.exit_code, result.stderr) == (2, "attnrec pseudonym: USER_ID is empty; pass the raw id, e.g. "
                                                    "attnrec pseudonym u42\n")  # fmt: skip


# ----------------------------------------------------------------------------------------- the cluster stack


def test_compose_requires_the_key_from_env_with_no_default():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    image_services = [n for n, svc in compose["services"].items() if svc.get("image") == "attnrec:local"]
    assert {"airflow-scheduler", "spark-worker", "trainer"} <= set(image_services)
    for name in image_services:
        value = compose["services"][name]["environment"]["ATTNREC_PSEUDONYM_KEY"]
        assert value.startswith("${ATTNREC_PSEUDONYM_KEY:?set ATTNREC_PSEUDONYM_KEY in .env"), name
    example = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if line[:1] not in ("#", "")
    )
    assert example["ATTNREC_PSEUDONYM_KEY"] == ""


def test_candidates_map_pseudonyms_back_to_raw_ids_and_refuse_unknown_ones(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attnrec import lake
    from attnrec.identity import load_identity, raw_user_ids

    root = str(tmp_path)
    for dt, rows in {
        "2026-01-01": [("p1", "alice"), ("p2", "bob")],
        "2026-01-02": [("p2", "bob"), ("p3", "carol")],
    }.items():
        path = Path(lake.partition(root, lake.IDENTITY_USERS, dt))
        path.mkdir(parents=True)
        pq.write_table(
            pa.table({"pseudonym": [p for p, _ in rows], "user_id": [u for _, u in rows]}), path / "a.parquet"
        )
        (path / lake.SUCCESS_MARKER).touch()
    staged = Path(lake.staging(root, lake.IDENTITY_USERS, "2026-01-03"))  # not published: not read
    staged.mkdir(parents=True)
    pq.write_table(pa.table({"pseudonym": ["p4"], "user_id": ["dave"]}), staged / "a.parquet")
    identity = load_identity(root)
    assert identity.num_rows == 3
    assert raw_user_ids(pa.array(["p3", "p1", "p2", "p1"]), identity, "2026-01-02").to_pylist() == [
        "carol",
        "alice",
        "bob",
        "alice",
    ]
    with pytest.raises(
        ValueError,
        match=r"1 users in features/sequences/dt=2026-01-02 have no row in identity/users \(e.g. pseudonym p4\)",
    ):
        raw_user_ids(pa.array(["p1", "p4"]), identity, "2026-01-02")
