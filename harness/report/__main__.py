"""`python -m harness.report [DIR ...]`: the Pareto report over every record under the given
directories (default: outputs), written to --out and printed as a table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report.records import collect
from harness.report.summary import print_table
from harness.report.write import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__)
    parser.add_argument("dirs", nargs="*", type=Path, default=[Path("outputs")], help="where to look for record.json files")
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="where the report goes")
    parser.add_argument("--title", default="slm-harness: accuracy vs speed, memory and energy")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        parser.error(f"no such directory: {', '.join(map(str, missing))} (run a sweep first: make run)")
    records = collect(args.dirs)
    if not records:
        parser.error(f"no record.json under {', '.join(map(str, args.dirs))} (run a sweep first: make run)")
    print_table(records, args.title)
    out = write_report(records, args.out, args.title)
    print(f"report: {out / 'report.html'} (also report.md, report.csv and the plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
