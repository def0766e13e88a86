"""Compare what two runs of behavior_etl published for one day: are the partitions row-for-row identical?

    python benchmarks/etl_compare.py LAKE_A LAKE_B --dt 2026-01-01

For every dataset behavior_etl publishes (identity/users, clean/events, quarantine/events, features/sequences,
features/items, quarantine/items) it reads day ``dt`` of both lakes with pyarrow, makes ``source_file`` relative to its
lake root, sorts the rows by every sortable column and compares the tables (schema included, ``Table.equals``); then the
reconciliation and the look-back manifest (paths relative to the lake root). Prints one line per dataset and exits 1
when anything differs. Two lakes cleaned with different pseudonym keys (each benchmark lake makes its own) are compared
through their identity tables: every pseudonym in ``user_id`` is mapped back to the raw id it stands for (identity/users
of all days of its own lake), and identity/users itself is compared on the raw ids alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATASETS = (
    "identity/users",
    "clean/events",
    "quarantine/events",
    "features/sequences",
    "features/items",
    "quarantine/items",
)


def raw_ids(root: Path) -> dict[str, str]:
    """pseudonym -> raw user id, from every day of the lake's identity/users."""
    import pyarrow.parquet as pq

    path = root / "identity" / "users"
    if not path.exists():
        return {}
    days = sorted(p for p in path.iterdir() if p.name.startswith("dt="))
    mapping: dict[str, str] = {}
    for day in days:
        table = pq.read_table(day)
        mapping.update(zip(table["pseudonym"].to_pylist(), table["user_id"].to_pylist()))
    return mapping


def read_sorted(root: Path, dataset: str, dt: str, mapping: dict[str, str]):
    """The partition as one pyarrow table, ``source_file`` relative to ``root``, pseudonyms mapped back to raw ids,
    rows sorted; None when absent."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = root / dataset / f"dt={dt}"
    if not path.exists():
        return None
    table = pq.read_table(path)
    if dataset == "identity/users":
        table = table.select(["user_id"])
    elif "user_id" in table.column_names:
        ids = pa.array([mapping.get(p, f"<unmapped {p}>") for p in table["user_id"].to_pylist()], pa.string())
        table = table.set_column(table.column_names.index("user_id"), table.schema.field("user_id"), ids)
    if "source_file" in table.column_names:
        relative = table["source_file"]
        for prefix in (f"file://{root.resolve()}/", f"file:{root.resolve()}/"):  # Spark writes either form
            relative = pc.replace_substring(relative, prefix, "")
        table = table.set_column(table.column_names.index("source_file"), "source_file", relative)
    keys = [
        (name, "ascending")
        for name, kind in zip(table.column_names, table.schema.types)
        if not (pa.types.is_list(kind) or pa.types.is_struct(kind) or pa.types.is_map(kind))
    ]
    return table.sort_by(keys).combine_chunks() if keys else table


def relative_json(path: Path, root: Path):
    """A JSON file of the lake with the lake root taken out of every string in it (None when absent)."""
    if not path.exists():
        return None
    return json.loads(path.read_text().replace(str(root.resolve()), "<lake>"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lake_a", type=Path)
    parser.add_argument("lake_b", type=Path)
    parser.add_argument("--dt", required=True, help="the landing day to compare (YYYY-MM-DD)")
    args = parser.parse_args(argv)

    differ = 0
    mappings = {root: raw_ids(root) for root in (args.lake_a, args.lake_b)}
    for dataset in DATASETS:
        a, b = (read_sorted(root, dataset, args.dt, mappings[root]) for root in (args.lake_a, args.lake_b))
        if a is None and b is None:
            print(f"{dataset}: absent in both")
            continue
        same = a is not None and b is not None and a.equals(b, check_metadata=False)
        rows = "/".join(str(t.num_rows) if t is not None else "absent" for t in (a, b))
        print(f"{dataset}: {'identical' if same else 'DIFFERENT'} ({rows} rows)")
        differ += not same
    for name, relpath in (
        ("reconciliation", f"clean/events/dt={args.dt}/_reconciliation.json"),
        ("look-back manifest", f"features/sequences/dt={args.dt}/_manifest.json"),
    ):
        a, b = (relative_json(root / relpath, root) for root in (args.lake_a, args.lake_b))
        same = a == b and a is not None
        print(f"{name}: {'identical' if same else 'DIFFERENT'}")
        differ += not same
    print("all identical" if not differ else f"{differ} difference(s)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
