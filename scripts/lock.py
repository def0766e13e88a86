"""Write the sha256 hashes of every pin into the lock files, so `pip install --require-hashes` refuses any file
that is not the one we pinned (a compromised mirror, a re-uploaded release, a typo-squatted name).

    python scripts/lock.py            # rewrite requirements.lock and requirements-bootstrap.lock in place

The pins themselves (``name==version`` lines) are the input: change a version in requirements.lock (or add a
line), run this, commit both. Each pin gets the hash of every file PyPI's simple index lists for that version
(every platform's wheel and the sdist, as pip-compile --generate-hashes does) plus any file of that version
that this machine kind's local package mirrors list (``/opt/pypi*/simple``: the same files, so normally the same
hashes). requirements-bootstrap.lock pins pip itself and the CPU build of torch (``torch==X+cpu``: the wheel in
``/opt/wheels`` here, or download.pytorch.org/whl/cpu elsewhere); its torch hash is that wheel's own.
Standard library only (it runs before the venv exists); needs the package registry, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
BOOTSTRAP = ROOT / "requirements-bootstrap.lock"
PYPI_SIMPLE = "https://pypi.org/simple"
LOCAL_SIMPLE = (Path("/opt/pypi/simple"), Path("/opt/pypi-more/simple"))
LOCAL_WHEELS = Path("/opt/wheels")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(\[[^\]]*\])?==([^\s;\\#]+)")

HEADER = (
    "# Every pin with the sha256 of each file of that release: install with pip's --require-hashes (make venv does).\n"
    "# Edit the name==version lines, then run `python scripts/lock.py` to refresh the hashes.\n"
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def file_version(filename: str) -> str | None:
    """The version in a distribution file name (wheel or sdist), or None."""
    if filename.endswith(".whl"):
        parts = filename.split("-")
        return parts[1] if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip", ".tar.bz2"):
        if filename.endswith(ext):
            return filename[: -len(ext)].rsplit("-", 1)[-1]
    return None


def same_version(a: str, b: str) -> bool:
    """Version equality the PEP 440 way, for the forms lock files use (1.0 == 1.0.0; case; local labels kept)."""

    def norm(v: str) -> tuple:
        base, _, local = v.lower().partition("+")
        parts = base.split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return tuple(parts), local

    return norm(a) == norm(b)


def pypi_hashes(name: str, version: str) -> set[str]:
    request = urllib.request.Request(
        f"{PYPI_SIMPLE}/{canonical(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.load(response)["files"]
    return {
        f["hashes"]["sha256"]
        for f in files
        if "sha256" in f.get("hashes", {}) and same_version(file_version(f["filename"]) or "", version)
    }


def local_hashes(name: str, version: str) -> set[str]:
    found = set()
    for simple in LOCAL_SIMPLE:
        page = simple / canonical(name) / "index.html"
        if page.is_file():
            for filename, digest in re.findall(r'href="[^"#]*?([^/"#]+)#sha256=([0-9a-f]{64})"', page.read_text()):
                if same_version(file_version(filename) or "", version):
                    found.add(digest)
    return found


def wheel_hash(name: str, version: str) -> set[str]:
    found = set()
    for wheel in LOCAL_WHEELS.glob(f"{canonical(name).replace('-', '_')}-{version}-*.whl"):
        found.add(hashlib.sha256(wheel.read_bytes()).hexdigest())
    return found


def pins(path: Path) -> list[tuple[str, str]]:
    """(requirement as written, version) of each ``name==version`` line, hashes and comments ignored."""
    out = []
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            out.append((f"{match.group(1)}{match.group(2) or ''}=={match.group(3)}", match.group(3)))
    return out


def write(path: Path, header: str, entries: list[tuple[str, set[str]]]) -> None:
    lines = [header]
    for requirement, hashes in entries:
        lines.append(f"{requirement} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in sorted(hashes)) + "\n")
    path.write_text("".join(lines))


def main() -> int:
    entries, missing = [], []
    for requirement, version in pins(LOCK):
        name = re.split(r"[\[=]", requirement, maxsplit=1)[0]
        hashes = pypi_hashes(name, version) | local_hashes(name, version)
        if not hashes:
            missing.append(requirement)
        entries.append((requirement, hashes))
        print(f"{requirement}: {len(hashes)} files", file=sys.stderr)
    boot = []
    for requirement, version in pins(BOOTSTRAP):
        name = requirement.split("==", 1)[0]
        hashes = (
            wheel_hash(name, version) if "+" in version else pypi_hashes(name, version) | local_hashes(name, version)
        )
        if not hashes:
            missing.append(requirement)
        boot.append((requirement, hashes))
        print(f"{requirement}: {len(hashes)} files (bootstrap)", file=sys.stderr)
    if missing:
        print(f"error: no file found for {', '.join(missing)}; check the versions exist on PyPI", file=sys.stderr)
        return 1
    write(LOCK, HEADER, entries)
    write(
        BOOTSTRAP,
        "# Installed first with --no-deps (make venv): pip itself, and the CPU build of torch, whose local version\n"
        "# label (+cpu) keeps pip from choosing PyPI's CUDA build. Its dependencies are in requirements.lock.\n"
        "# Where no +cpu wheel is on a find-links path or index, add --extra-index-url https://download.pytorch.org/whl/cpu\n",
        boot,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
