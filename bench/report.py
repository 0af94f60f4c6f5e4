"""A Markdown table of one or more bench/run.py JSON files, for bench/RESULTS.md.

.venv/bin/python bench/report.py bench/results/A.json [B.json ...] > bench/RESULTS.md
"""

from __future__ import annotations

import json
import sys


def _cell(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else ""


def table(path) -> str:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    lines = [
        f"### {path.rsplit('/', 1)[-1]} ({data.get('machine', '?')}, {data.get('cpus', '?')} CPUs{', quick' if data.get('quick') else ''})",
        "",
        "| row | ours s | baseline s | ratio | target | note |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['name']} | {_cell(row.get('ours_s'), '.4f')} | {_cell(row.get('baseline_s'), '.4f')} | "
            f"{_cell(row.get('ratio'), '.2f')} | {row.get('target', '')} | {row.get('note', '')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        raise SystemExit(__doc__)
    print("\n".join(table(p) for p in paths))


if __name__ == "__main__":
    main()
