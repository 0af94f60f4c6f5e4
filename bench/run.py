"""Benchmark entry point: ours vs transformers side by side, one table, one JSON file.

    .venv/bin/python bench/run.py [--quick] [--only tokenizer,image_processor,pt,tf,flax,train,tasks] [--out FILE]
    PYTHONPATH=. python bench/run.py --only gpu     # on a machine with a CUDA GPU (bench_gpu.py)

Each bench_*.py module exposes `rows(quick: bool) -> list[dict]` with at least
name / ours_s / baseline_s / ratio / target. CI never runs this: speed is reported, not asserted.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SUITES = ("tokenizer", "image_processor", "pt", "tf", "flax", "train", "tasks")
EXTRA_SUITES = ("gpu",)  # only when asked for by --only: needs a CUDA device


def _fmt(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else str(value if value is not None else "")


def print_table(rows):
    columns = [
        ("name", "<46", "s"),
        ("ours_s", ">10", ".4f"),
        ("baseline_s", ">10", ".4f"),
        ("ratio", ">7", ".2f"),
        ("target", ">9", "s"),
    ]
    header = "  ".join(format(name, align) for name, align, _ in columns) + "  note"
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [format(_fmt(row.get(name), spec), align) for name, align, spec in columns]
        print("  ".join(cells) + "  " + str(row.get("note", "")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small inputs, for a smoke run")
    parser.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {SUITES + EXTRA_SUITES}")
    parser.add_argument("--out", default=None, help="JSON output (default bench/results/<time>.json)")
    args = parser.parse_args(argv)

    sys.path.insert(0, HERE)
    rows = []
    for suite in [s.strip() for s in args.only.split(",") if s.strip()]:
        if suite not in SUITES + EXTRA_SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {SUITES + EXTRA_SUITES}")
        module = importlib.import_module(f"bench_{suite}")
        for row in module.rows(quick=args.quick):
            rows.append({"suite": suite, **row})
            print(f"  measured: {row['name']}  ratio {_fmt(row.get('ratio'), '.2f')}", file=sys.stderr)
    print()
    print_table(rows)

    out = args.out or os.path.join(HERE, "results", datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    from clip.common.io import atomic_write_json

    atomic_write_json(out, {"machine": platform.machine(), "cpus": os.cpu_count(), "quick": args.quick, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
