"""The database layer: every statement the cluster runs, one module per table family.

``projects`` (a project's life: the one writer of its status), ``tasks`` (rows inserted,
re-opened, cancelled), ``claims`` (the dispatcher's due rows and in-flight counts),
``outcomes`` (end states and retries), ``counts`` and ``failures`` (what a user reads of a
project's rows), ``timers``, ``hosts`` (robots.txt per host), ``results`` (items), ``render``
(screenshots, render workers and hosts), ``lease`` (the scheduler lease), ``stats``
(crawl_stats and the reads behind the waiting sentences) and ``write_lock`` (an embedded
crawl's SQLite lock). The engines and the upsert helper are in ``crawlcluster.db``, the
tables in ``crawlcluster.schema``. Nothing in this package imports ``Request``, ``Spider``
or the scheduling options (tests/test_layout.py holds it to that).
"""
