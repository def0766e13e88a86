"""The lock files carry hashes, `make venv` installs with them, and pip refuses a file whose hash is not pinned."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(
    r"^([A-Za-z0-9][^\s=\[]*)(?:\[[^\]]*\])?==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M
)


def entries(path: Path) -> dict[str, str]:
    """name -> its whole entry (pin line and hash lines) in a lock file."""
    return {m.group(1).lower(): m.group(0) for m in PIN.finditer(path.read_text())}


def test_every_pin_of_both_lock_files_carries_its_hashes():
    for path in (ROOT / "requirements.lock", ROOT / "requirements-bootstrap.lock"):
        pins = re.findall(r"^[^#\s]\S*==", path.read_text(), re.M)
        assert len(entries(path)) == len(pins) > 0, path
    assert "torch" in entries(ROOT / "requirements.lock")  # the pyfunc's requirements are pinned from it
    assert re.search(r"^torch==\S+\+cpu ", (ROOT / "requirements-bootstrap.lock").read_text(), re.M)


def test_make_venv_installs_hash_checked_then_checks_consistency():
    makefile = (ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install (.*?-r requirements[^ ]*\.lock)", makefile)
    assert installs == [
        "--quiet --require-hashes --no-deps -r requirements-bootstrap.lock",
        "--quiet --require-hashes -r requirements.lock",
    ]
    assert "pip check" in makefile


def test_pip_refuses_a_file_whose_hash_the_lock_does_not_pin(tmp_path):
    entry = entries(ROOT / "requirements.lock")["six"]  # small, pure Python, always in the lock (via dateutil)
    good, bad = tmp_path / "good.lock", tmp_path / "bad.lock"
    good.write_text(entry)
    bad.write_text(re.sub(r"sha256:[0-9a-f]", "sha256:0", entry))  # every hash of the entry altered
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "--no-cache-dir"]
    ok = subprocess.run([*cmd, "--target", str(tmp_path / "ok"), "-r", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    refused = subprocess.run([*cmd, "--target", str(tmp_path / "no"), "-r", str(bad)], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "DO NOT MATCH THE HASHES" in refused.stderr
