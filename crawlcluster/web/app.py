"""The crawl console's Starlette application: its routes, static files and guards.

:func:`create_app` builds it from plain values (database URL, broker, credentials), so a
test serves it on a database of its own; ``crawlcluster web`` builds it from the
settings (:func:`from_settings`) and serves it with uvicorn. The pages are in
:mod:`crawlcluster.web.views_dashboard`, :mod:`crawlcluster.web.views_project` and
:mod:`crawlcluster.web.views_results` and
:mod:`crawlcluster.web.views_workers`; what they share is :mod:`crawlcluster.web.common`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from crawlcluster.settings import Settings
from crawlcluster.web import views_dashboard, views_debug, views_project, views_results, views_workers
from crawlcluster.web.common import HERE, Console
from crawlcluster.web.security import BasicAuth, parse_auth


def create_app(database_url: str | None, *, broker_url: str = "", key_prefix: str = "",
               auth: str = "") -> Starlette:
    """The console over the database at ``database_url`` (None: the database_url setting)
    and the broker at ``broker_url``; ``auth`` (``user:password,...``) turns basic auth on."""
    credentials = parse_auth(auth)
    routes = [
        *views_dashboard.routes, *views_project.routes, *views_results.routes, *views_debug.routes,
        *views_workers.routes,
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(BasicAuth, credentials=credentials)] if credentials else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.console = Console(database_url, broker_url, key_prefix)
    return app


def from_settings(s: Settings) -> Starlette:
    return create_app(s.database_url, broker_url=s.broker_url, key_prefix=s.broker_key_prefix,
                      auth=s.web_auth)

