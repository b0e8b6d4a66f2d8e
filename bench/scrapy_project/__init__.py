"""Scrapy spiders for the crawl benchmark, run with `scrapy runspider` (see bench/crawl.py)."""
