"""Serve the demo site in its own process (so the crawler under test does not share its
GIL) and print its URL on the first line of stdout. `python -m bench.serve_site --pages 300`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from crawlcluster.devtools.demo_site import DemoSite


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--no-traps", action="store_true")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with DemoSite(pages=args.pages, traps=not args.no_traps).serve() as server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        # the parent reads hit counts by asking over stdin: one line in, one JSON line out
        reader = threading.Thread(target=_answer_hits, args=(server, stop), daemon=True)
        reader.start()
        stop.wait()


def _answer_hits(server, stop: threading.Event) -> None:
    import json

    for line in sys.stdin:
        command = line.strip()
        if command == "hits":
            hits = server.hits()
            sys.stdout.write(json.dumps({"requests": sum(hits.values()), "targets": len(hits),
                                         "duplicates": sum(n - 1 for n in hits.values() if n > 1)}) + "\n")
        elif command == "reset":
            server.reset_hits()
            sys.stdout.write("{}\n")
        sys.stdout.flush()
    stop.set()


if __name__ == "__main__":
    main()
