"""Do pseudonyms change the model? Train on a published features partition as it is (raw ids) and on a copy whose
``user_id`` is replaced by keyed pseudonyms (a random key; rows re-ordered by pseudonym across 4 files, an order
featurize never writes), with ``benchmarks/train.py`` and the same arguments, and compare the figures each run prints
(validation and test metrics of the attention model, popularity, transition kNN and ALS; the speed figures differ).

Run: ``python benchmarks/pseudonym_invariance.py --data-root data --dt 1998-04-23 [--epochs 3] [train.py args...]``
(the lake of ``make demo`` holds MovieLens-100K's features for 1998-04-23). Prints both result blocks and
``identical: yes`` or ``identical: no``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The parts of a results line that must not depend on the ids (speed figures and times are left out).
FIGURE = re.compile(r"(val NDCG@10 [0-9.]+|test HR@10 [0-9.]+ NDCG@10 [0-9.]+|\d+ epochs|best epoch \d+)")


def copy_features(src: str, dst: Path, dt: str, key: bytes | None) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from attnrec import lake

    for dataset in (lake.FEATURE_ITEMS, lake.FEATURE_SEQUENCES):
        part = Path(lake.partition(src, dataset, dt))
        out = Path(lake.partition(str(dst), dataset, dt))
        out.mkdir(parents=True)
        table = pq.read_table(part)
        if dataset == lake.FEATURE_SEQUENCES and key is not None:
            ids = [hmac.new(key, u.encode(), hashlib.sha256).hexdigest()[:32] for u in table["user_id"].to_pylist()]
            table = table.set_column(table.schema.get_field_index("user_id"), "user_id", [ids])
            table = table.take(pc.sort_indices(table, [("user_id", "ascending")]))
            for n, start in enumerate(range(0, table.num_rows, -(-table.num_rows // 4))):
                pq.write_table(table.slice(start, -(-table.num_rows // 4)), out / f"part-{n:05d}.parquet")
        else:
            pq.write_table(table, out / "part-00000.parquet")
        (out / lake.SUCCESS_MARKER).touch()


def results(lines: str) -> list[str]:
    block = lines.split("\nresults\n", 1)[1].splitlines()
    return [f"{line.split(':')[0].strip()}: {' '.join(FIGURE.findall(line))}" for line in block if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--dt", required=True)
    parser.add_argument("--epochs", default="3")
    args, rest = parser.parse_known_args()
    if "--max-minutes" not in rest:  # a wall-clock stop would make the epoch count depend on the machine's load
        rest += ["--max-minutes", "600"]
    work = Path(tempfile.mkdtemp(prefix="pseudonym-invariance-"))
    try:
        blocks = {}
        for name, key in (("raw ids", None), ("pseudonyms", secrets.token_hex(32).encode())):
            lake_dir = work / name.replace(" ", "_")
            copy_features(args.data_root, lake_dir, args.dt, key)
            cmd = [sys.executable, str(REPO / "benchmarks" / "train.py"), "--data-root", str(lake_dir), "--dt", args.dt]
            run = subprocess.run([*cmd, "--epochs", args.epochs, *rest], capture_output=True, text=True, cwd=REPO)
            if run.returncode:
                print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
                return run.returncode
            blocks[name] = results(run.stdout)
            print(f"{name}:", *blocks[name], sep="\n  ", flush=True)
        print("identical:", "yes" if blocks["raw ids"] == blocks["pseudonyms"] else "no")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
