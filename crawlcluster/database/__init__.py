"""The database layer, growing: ``projects`` (a project's life, the one writer of its status).

The engines and the upsert helper are in ``crawlcluster.db``, the tables in
``crawlcluster.schema`` and the frontier's queries in ``crawlcluster.frontier``; they move here
one table family at a time. Nothing in this package imports ``Request`` or ``Spider``.
"""
