"""The crawl console (``crawlcluster web``): a web page per cluster where people watch and steer
their crawls, reading the same Postgres (or an embedded crawl's SQLite file) and Redis as the
cluster.

    app.py              the Starlette application (routes, static files, basic auth)
    common.py           what every page shares: templates, headers, the CSRF check
    security.py         loopback by default, basic auth, the CSRF token and origin check
    figures.py          the dashboard's figures (projects, pipeline strip, scheduler)
    why.py              why a pending URL is not fetched yet, by the dispatcher's rules
    views_dashboard.py  /, /api/dashboard and the project actions (pause, resume, ...)
    views_project.py    a project's hosts, failures and URL search; a URL's page
    views_results.py    the results browser and its downloads
    views_debug.py      the step debugger: one URL through a spider callback (workers.trial)
    templates/, static/ the pages, one small stylesheet and one small script (no CDN)

Importing this package imports no web framework; ``crawlcluster.web.app`` does.
"""
