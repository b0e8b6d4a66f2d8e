"""crawlcluster benchmarks: print tables, assert nothing. `python -m bench --help`."""
