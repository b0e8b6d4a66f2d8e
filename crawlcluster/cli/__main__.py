"""``python -m crawlcluster.cli``: the same command as the ``crawlcluster`` console script."""

from crawlcluster.cli import main

main()
