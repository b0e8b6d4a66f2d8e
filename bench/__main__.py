"""`python -m bench NAME [options]`: run one benchmark and print its table."""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="crawlcluster benchmarks (print tables, assert nothing)")
    sub = parser.add_subparsers(dest="name", required=True)
    site300 = sub.add_parser("site300", help="embedded vs cluster pages/s on the demo site, message bytes per page")
    site300.add_argument("--runs", type=int, default=3)
    site300.add_argument("--pages", type=int, default=300)
    args = parser.parse_args()
    if args.name == "site300":
        from bench.site300 import main as run

        run(runs=args.runs, pages=args.pages)


if __name__ == "__main__":
    main()
