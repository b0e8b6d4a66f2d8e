"""`python -m bench NAME [options]`: run one benchmark and print its table."""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="crawlcluster benchmarks (print tables, assert nothing)")
    sub = parser.add_subparsers(dest="name", required=True)
    site300 = sub.add_parser("site300",
                             help="embedded vs cluster pages/s on the demo site, message bytes per page")
    site300.add_argument("--runs", type=int, default=3)
    site300.add_argument("--pages", type=int, default=300)
    crawl = sub.add_parser("crawl",
                           help="crawlcluster beside Scrapy and scrapy-redis on the fast local site(s)")
    crawl.add_argument("--site", default="bench", choices=("bench", "small", "both"),
                       help="the bench site (10–50 KB pages), the small-page site (~2 KB) or both")
    crawl.add_argument("--pages", type=int, default=5000, help="pages of the bench site")
    crawl.add_argument("--small-pages", type=int, default=2000, help="pages of the small-page site")
    crawl.add_argument("--runs", type=int, default=3)
    crawl.add_argument("--only",
                       help="comma-separated subset of: scrapy,embedded,cluster1,cluster2,redis1,redis2")
    crawl.add_argument("--timeout", type=float,
                       help="seconds one crawl may take (default: max(120, pages/4))")
    crawl.add_argument("--write-results", action="store_true",
                       help="replace the crawl table in bench/RESULTS.md")
    sitespeed = sub.add_parser("sitespeed", help="responses/s of the fast benchmark site, measured with wrk")
    sitespeed.add_argument("--pages", type=int, default=5000)
    sitespeed.add_argument("--seconds", type=int, default=10)
    sitespeed.add_argument("--connections", type=int, default=64)
    sitespeed.add_argument("--write-results", action="store_true",
                           help="replace the site speed in bench/RESULTS.md")
    render = sub.add_parser("render",
                            help="render tier: pages/s with 1, 2, 4 pages in flight; browser memory")
    render.add_argument("--pages", type=int, default=120)
    render.add_argument("--memory-pages", type=int, default=1000)
    render.add_argument("--no-baseline", action="store_true", help="skip the one-browser memory comparison")
    scheduler = sub.add_parser("scheduler", help="the scheduler alone at 10^5, 10^6 (and 10^7) pending rows")
    scheduler.add_argument("--sizes", default="100000,1000000", help="comma-separated pending row counts")
    scheduler.add_argument("--huge", action="store_true", help="add 10,000,000 rows to the sizes")
    scheduler.add_argument("--seconds", type=float, default=20)
    scheduler.add_argument("--keep", action="store_true",
                           help="keep the database at the end and reuse its rows when they are the size's")
    scaling = sub.add_parser("scaling", help="dispatch rate with the frontier split by host over K databases")
    scaling.add_argument("--rows", type=int, default=1_000_000, help="pending rows in all")
    scaling.add_argument("--splits", default="1,2", help="comma-separated numbers of databases")
    scaling.add_argument("--seconds", type=float, default=15)
    console = sub.add_parser("console",
                             help="the crawl console's pages and `status` at 10^5, 10^6 (10^7) rows")
    console.add_argument("--sizes", default="100000,1000000",
                         help="comma-separated row counts of the big project")
    console.add_argument("--huge", action="store_true", help="add 10,000,000 rows to the sizes")
    console.add_argument("--requests", type=int, default=30, help="requests per page and size")
    console.add_argument("--write-results", action="store_true",
                         help="replace the console section in bench/RESULTS.md")
    faults = sub.add_parser("faults",
                            help="the fault matrix: one cluster crawl per fault; lost, doubled, finished")
    faults.add_argument("--pages", type=int, default=10_000)
    faults.add_argument("--only", help="comma-separated subset of: none,kill-fetch,kill-parse,kill-store,"
                                       "kill-beat,redis-restart-empty,postgres-restart,stop-fetch,poison-page")
    faults.add_argument("--timeout", type=float, default=900,
                        help="seconds a run may take after its fault to finish (default 900)")
    faults.add_argument("--stop-seconds", type=float, default=60, help="how long stop-fetch stops the worker")
    faults.add_argument("--deadline", type=float,
                        help="CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS for the cluster (default: its default)")
    faults.add_argument("--write-results", action="store_true",
                        help="replace the fault matrix in bench/RESULTS.md")
    faults.add_argument("--keep-logs", metavar="DIR",
                        help="keep each fault's process logs in DIR/FAULT (default: a temporary directory)")
    hostile = sub.add_parser("hostile",
                             help="the hostile web of issue 16: one local site per case, a crawl each")
    hostile.add_argument("--only",
                         help="comma-separated subset of the cases (default: all; see bench/hostile.py)")
    hostile.add_argument("--timeout", type=float, default=150, help="seconds one case's crawl may take")
    hostile.add_argument("--code", metavar="DIR",
                         help="run the crawls from this checkout (PYTHONPATH=DIR), e.g. a worktree of an "
                              "older commit")
    screens = sub.add_parser("screenshots",
                             help="the README's pictures of the crawl console, from a real run")
    screens.add_argument("--laptop", metavar="DIR", help="also write each page at 1024 and 1440 px in DIR")
    args = parser.parse_args()
    if args.name == "screenshots":
        from bench.screenshots import main as run_screenshots

        run_screenshots(laptop=args.laptop)
        return
    if args.name == "site300":
        from bench.site300 import main as run

        run(runs=args.runs, pages=args.pages)
    elif args.name == "crawl":
        from bench.crawl import main as run_crawl

        run_crawl(pages=args.pages, runs=args.runs, only=args.only, timeout_seconds=args.timeout,
                  write_results=args.write_results, site=args.site, small_pages=args.small_pages)
    elif args.name == "render":
        from bench.render import main as run_render

        run_render(pages=args.pages, memory_pages=args.memory_pages, baseline=not args.no_baseline)
    elif args.name == "scheduler":
        from bench.scheduler import main as run_scheduler

        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
        if args.huge and 10_000_000 not in sizes:
            sizes.append(10_000_000)
        run_scheduler(sizes=sizes, seconds=args.seconds, keep=args.keep)
    elif args.name == "scaling":
        from bench.scaling import main as run_scaling

        run_scaling(rows=args.rows, splits=[int(k) for k in args.splits.split(",") if k.strip()],
                    seconds=args.seconds)
    elif args.name == "console":
        from bench.console import main as run_console

        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
        if args.huge and 10_000_000 not in sizes:
            sizes.append(10_000_000)
        run_console(sizes=sizes, requests=args.requests, write_results=args.write_results)
    elif args.name == "faults":
        from bench.faults import main as run_faults

        run_faults(pages=args.pages, only=args.only, timeout_seconds=args.timeout,
                   stop_seconds=args.stop_seconds, deadline_seconds=args.deadline,
                   write_results=args.write_results, keep_logs=args.keep_logs)
    elif args.name == "hostile":
        from bench.hostile import main as run_hostile

        run_hostile(only=args.only, timeout=args.timeout, code=args.code)
    elif args.name == "sitespeed":
        from bench.sitespeed import main as run_speed

        run_speed(pages=args.pages, seconds=args.seconds, connections=args.connections,
                  write_results=args.write_results)


if __name__ == "__main__":
    main()
