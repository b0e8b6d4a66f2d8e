"""`python -m bench NAME [options]`: run one benchmark and print its table."""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="crawlcluster benchmarks (print tables, assert nothing)")
    sub = parser.add_subparsers(dest="name", required=True)
    site300 = sub.add_parser("site300", help="embedded vs cluster pages/s on the demo site, message bytes per page")
    site300.add_argument("--runs", type=int, default=3)
    site300.add_argument("--pages", type=int, default=300)
    crawl = sub.add_parser("crawl", help="crawlcluster beside Scrapy and scrapy-redis on the fast local site")
    crawl.add_argument("--pages", type=int, default=5000)
    crawl.add_argument("--runs", type=int, default=3)
    crawl.add_argument("--only", help="comma-separated subset of: scrapy,embedded,cluster1,cluster2,redis1,redis2")
    crawl.add_argument("--timeout", type=float, help="seconds one crawl may take (default: max(120, pages/4))")
    crawl.add_argument("--write-results", action="store_true", help="replace the crawl table in bench/RESULTS.md")
    sitespeed = sub.add_parser("sitespeed", help="responses/s of the fast benchmark site, measured with wrk")
    sitespeed.add_argument("--pages", type=int, default=5000)
    sitespeed.add_argument("--seconds", type=int, default=10)
    sitespeed.add_argument("--connections", type=int, default=64)
    sitespeed.add_argument("--write-results", action="store_true", help="replace the site speed in bench/RESULTS.md")
    args = parser.parse_args()
    if args.name == "site300":
        from bench.site300 import main as run

        run(runs=args.runs, pages=args.pages)
    elif args.name == "crawl":
        from bench.crawl import main as run_crawl

        run_crawl(pages=args.pages, runs=args.runs, only=args.only, timeout_seconds=args.timeout,
                  write_results=args.write_results)
    elif args.name == "sitespeed":
        from bench.sitespeed import main as run_speed

        run_speed(pages=args.pages, seconds=args.seconds, connections=args.connections,
                  write_results=args.write_results)


if __name__ == "__main__":
    main()
