"""Development tools, kept apart from the cluster's own code: the demo site behind
``crawlcluster demo`` (``demo_site``, served by ``site_server``), the harness that runs a
local cluster of real worker and beat processes for tests and benchmarks
(``local_cluster``), and the JavaScript-built test site the render tests and ``python -m
bench render`` crawl (``js_site``). No worker, task or scheduler imports them; only the
CLI's ``demo`` command loads ``demo_site``, when it runs.
"""
