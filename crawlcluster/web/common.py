"""What every page of the crawl console shares: the console's state, the templates, the
security headers, the CSRF check of a POSTed form, and the answers after an action.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from crawlcluster.web.figures import Consumers
from crawlcluster.web.security import CsrfGuard
from crawlcluster.web.workers import CeleryWatch, LeaseMemory

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# what a browser may load on a console page: its own scripts and styles only, never a frame
SECURITY_HEADERS = {
    # style attributes carry the progress bars' widths (escaped numbers), so the bars draw
    # without the script
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "style-src-attr 'unsafe-inline'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@dataclass
class Console:
    """What every request of one console process shares."""

    database_url: str | None
    broker_url: str
    key_prefix: str
    csrf: CsrfGuard = field(default_factory=CsrfGuard)
    consumers: Consumers = field(init=False)
    # the workers page's memory of every worker and lease seen (kept when one goes silent)
    workers: CeleryWatch = field(init=False)
    leases: LeaseMemory = field(default_factory=LeaseMemory)

    def __post_init__(self) -> None:
        self.consumers = Consumers(self.broker_url)
        self.workers = CeleryWatch(self.broker_url)
        self.workers.start_events()


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["when"] = _when
templates.env.filters["num"] = lambda value: f"{int(value or 0):,}"
templates.env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False,
                                                                  sort_keys=True, default=str)


def console_of(request: Request) -> Console:
    return request.app.state.console


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """Render template ``name`` with the CSRF token every form posts back."""
    console = console_of(request)
    response = templates.TemplateResponse(request, name, {"csrf_token": console.csrf.token, **context},
                                          status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


async def checked_form(request: Request) -> tuple[dict[str, str], Response | None]:
    """The POSTed form, and a 403 response when it fails the CSRF check (else None)."""
    form = await request.form()
    values = {key: str(value) for key, value in form.items()}
    sent = values.get("csrf_token") or request.headers.get("x-csrf-token")
    refusal = console_of(request).csrf.refusal(request.headers, request.url.scheme, sent)
    if refusal:
        logger.warning("refused a POST to %s: %s", request.url.path, refusal)
        return values, PlainTextResponse(f"refused: {refusal}\n", status_code=403)
    return values, None


def back(request: Request, fallback: str = "/") -> RedirectResponse:
    """303 to the page the form was on (its own path only), after an action."""
    from urllib.parse import urlsplit

    referer = urlsplit(request.headers.get("referer") or "")
    target = referer.path + (f"?{referer.query}" if referer.query else "") if referer.path else fallback
    if not target.startswith("/") or target.startswith("//"):
        target = fallback
    return RedirectResponse(target, status_code=303)


def not_found(request: Request, what: str) -> Response:
    return page(request, "missing.html", {"what": what}, status_code=404)
