"""The data-plane engines, plain Python with no Celery in them: fetcher, parser, store.
Each owns its per-process resources (HTTP client, spider instances, database engine)."""
