"""`python -m harness.report [DIR ...]`: the Pareto report over every record under the given
directories (default: outputs), written to --out and printed as a table.

Two directories side by side compare two runs: variants that differ only in `train.*` options
or data are named for what differs.

Results pages, generated rather than typed:

    python -m harness.report DIR --results docs/results/NAME --command "make run"
        keeps DIR's records as docs/results/NAME.csv and renders NAME.md from it, stating the
        CSV's SHA-256
    python -m harness.report --render docs/results/NAME.csv [--readme README.md]
        renders NAME.md again from the CSV (and the README's copy of its table), keeping the
        SHA-256 the page states: a CSV edited by hand no longer matches it
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report import results
from harness.report.config import ReportConfig
from harness.report.records import collect
from harness.report.summary import print_table
from harness.report.write import write_report


def render(csv_path: Path, readme: Path | None, title: str | None = None, csv_sha256: str | None = None) -> None:
    md = results.write_page(csv_path, title, csv_sha256)
    print(f"results page: {md}")
    if readme is not None:
        rows = results.read_csv(csv_path)
        readme.write_text(
            results.readme_with_table(readme.read_text(encoding="utf-8"), csv_path.stem, rows), encoding="utf-8"
        )
        print(f"README table: {readme}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dirs", nargs="*", type=Path, default=[Path("outputs")], help="where to look for record.json files"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="where the report goes")
    parser.add_argument("--title", default="slm-harness: accuracy vs speed, memory and energy")
    parser.add_argument("--results", type=Path, metavar="PATH", help="keep the records as PATH.csv and render PATH.md")
    parser.add_argument("--command", help="with --results: the command that produced the records")
    parser.add_argument("--render", type=Path, metavar="CSV", help="render a results page again from its CSV")
    parser.add_argument(
        "--readme", type=Path, help="with --results or --render: refresh this README's copy of the table"
    )
    parser.add_argument("--baseline", help="the variant the others are compared with (default: the largest artifact)")
    parser.add_argument(
        "--min-relative-accuracy",
        type=float,
        default=ReportConfig.min_relative_accuracy,
        help="the gate: 95%% interval of accuracy relative to the baseline's against this (default %(default)s)",
    )
    args = parser.parse_args(argv)
    cfg = ReportConfig(args.baseline, args.min_relative_accuracy)
    if args.render:
        render(args.render, args.readme)
        return 0
    if args.results and not args.command:
        parser.error("--results needs --command: the command that produced the records, stated on the page")
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        parser.error(f"no such directory: {', '.join(map(str, missing))} (run a sweep first: make run)")
    records = collect(args.dirs)
    if not records:
        parser.error(f"no record.json under {', '.join(map(str, args.dirs))} (run a sweep first: make run)")
    print_table(records, args.title, cfg)
    if args.results:
        csv_path = args.results.with_suffix(".csv")
        results.write_csv(results.rows_from_records(records, args.command, cfg), csv_path)
        render(csv_path, args.readme, args.title, results.checksum(csv_path))
        return 0
    out = write_report(records, args.out, args.title, cfg)
    print(f"report: {out / 'report.html'} (also report.md, report.csv and the plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
