"""robots.txt in the data plane: the parse and store engines' one call each.

The scheduler asks for a host's robots.txt by queueing a row whose callback is
``ROBOTS_CALLBACK`` (:mod:`crawlcluster.dispatch.robots_gate`, the scheduler's side). The
fetch stage fetches it like any page. Then:

- parse: :func:`robots_outcomes` takes the robots.txt pages out of a batch before any spider
  sees them and turns each into an outcome holding its text, at most ``max_robots_bytes`` of
  it cut at a line's end (as Google reads the first 500 KiB; a 5 MB robots.txt would
  otherwise be stored whole and re-read by the scheduler), with the size it had when cut (a
  redirected robots.txt counts as absent, so everything is allowed);
- store: :func:`record_robots_outcomes` writes each robots.txt outcome (or failed fetch) to
  the hosts table through :func:`crawlcluster.dispatch.robots.record_robots` and returns the
  rows' outcomes apart from the spider's pages: a robots.txt row is the scheduler's own, so
  it never counts toward a project's failure streak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crawlcluster import scheduling, settings
from crawlcluster.database import projects as lifecycle
from crawlcluster.database.claims import fail_pending_on_host
from crawlcluster.database.hosts import forget_fetching
from crawlcluster.dispatch.robots import record_robots
from crawlcluster.http import Response
from crawlcluster.messages import CALLBACK, Outcome, Page, carry_cost, decompress_body, entry_callback
from crawlcluster.schema import DONE, FAILED, ROBOTS_CALLBACK, ROBOTS_ERROR, ROBOTS_UNREACHABLE
from crawlcluster.urls import url_host
from workers.fetch_errors import FINAL_KINDS


def is_robots(message: Page | Outcome) -> bool:
    """Whether a page or outcome is a host's robots.txt the scheduler asked for."""
    return entry_callback(message) == ROBOTS_CALLBACK


def robots_outcomes(pages: list[Page], max_bytes: int | None = None) -> tuple[list[Outcome], list[Page]]:
    """``(outcomes of the robots.txt pages, the other pages)``: a fetched robots.txt goes to
    the store stage as text (its first ``max_bytes``, default the ``max_robots_bytes``
    setting), and no spider sees it."""
    if max_bytes is None:
        max_bytes = settings.current().max_robots_bytes
    outcomes: list[Outcome] = []
    rest: list[Page] = []
    for page in pages:
        if is_robots(page):
            outcomes.append(carry_cost(page, _robots_outcome(page, max_bytes)))
        else:
            rest.append(page)
    return outcomes, rest


def _robots_outcome(page: Page, max_bytes: int) -> Outcome:
    outcome: Outcome = {"id": page["id"], "url": page["url"], "code": page.get("code"), "status": DONE,
                        CALLBACK: ROBOTS_CALLBACK}
    if "redirect" in page:
        # a redirected robots.txt is treated as absent (everything allowed)
        return {**outcome, "robots_code": 404, "final_url": page["redirect"]}
    body = decompress_body(page)
    if len(body) > max_bytes:
        # the first max_bytes, up to the last whole line: a rule is never cut in two
        kept = body[:max_bytes]
        outcome["robots_bytes"] = len(body)
        body = kept[:kept.rfind(b"\n") + 1] or kept
    response = Response(page["url"], page["code"], page.get("headers") or {}, body)
    return {**outcome, "robots_code": page["code"], "robots": response.text}


@dataclass(frozen=True)
class RobotsPolicy:
    """How a fetched robots.txt is kept: read from the settings once, handed in plainly."""

    user_agent: str
    ttl_seconds: float
    error_attempts: int
    unreachable_seconds: float
    max_crawl_delay_seconds: float | None = None

    @classmethod
    def from_settings(cls, s: settings.Settings) -> RobotsPolicy:
        return cls(user_agent=s.user_agent, ttl_seconds=s.robots_ttl_seconds,
                   error_attempts=s.robots_error_attempts, unreachable_seconds=s.robots_unreachable_seconds,
                   max_crawl_delay_seconds=s.max_crawl_delay_seconds)


def record_robots_outcomes(conn: Any, project: str, outcomes: list[Outcome], now: float,
                           policy: RobotsPolicy | None = None) -> tuple[list[Outcome], list[Outcome]]:
    """Write each robots.txt among ``outcomes`` to the hosts table; return ``(the robots.txt
    rows' outcomes, the other outcomes)``. A 4xx robots.txt is a success (the host allows
    everything); a failed one is tried again after the project's retry delays (its retry
    policy's, or its own retry_delays) and its row fails without a retry of its own; one
    that failed for good (broken HTTP, TLS, a certificate) makes its host unreachable at once."""
    robots = [outcome for outcome in outcomes if is_robots(outcome)]
    if not robots:
        return [], outcomes
    policy = policy or RobotsPolicy.from_settings(settings.current())
    project_settings = (lifecycle.project_row(conn, project) or {}).get("settings") or {}
    delays = scheduling.resolve(None, None, None, project_settings).retry_delays
    recorded: list[Outcome] = []
    for outcome in robots:
        if outcome.get("kind") == "address":
            recorded.append(_refused_robots(conn, project, outcome, now))
            continue
        code = outcome.get("robots_code", outcome.get("code"))
        state = record_robots(
            conn, url_host(outcome["url"]), body=outcome.get("robots"), status_code=code,
            error=outcome.get("error"), kind=outcome.get("kind"), user_agent=policy.user_agent,
            ttl_seconds=policy.ttl_seconds, error_attempts=policy.error_attempts, error_delays=delays,
            unreachable_seconds=policy.unreachable_seconds, now=now,
            max_crawl_delay=policy.max_crawl_delay_seconds, cut_from=outcome.get("robots_bytes"),
            final=outcome.get("status") == FAILED and outcome.get("kind") in FINAL_KINDS)
        if state in (ROBOTS_ERROR, ROBOTS_UNREACHABLE):
            recorded.append({**outcome, "status": FAILED, "retry": False})
        else:
            done: Outcome = {"id": outcome["id"], "url": outcome["url"], "status": DONE, "code": code}
            if final_url := outcome.get("final_url"):
                done["final_url"] = final_url
            recorded.append(done)
    return recorded, [outcome for outcome in outcomes if not is_robots(outcome)]


def _refused_robots(conn: Any, project: str, outcome: Outcome, now: float) -> Outcome:
    """A robots.txt the address guard refused for ``project``: a fact about the project's
    trust, not the host, so the shared hosts table is left as it was before the ask (another
    project that trusts the host fetches it), and the project's pending rows on the host,
    which would be refused as well, end failed with the same reason."""
    host = url_host(outcome["url"])
    forget_fetching(conn, host, now)
    reason = f"{outcome.get('error')}; nothing on this host is fetched for this project"
    fail_pending_on_host(conn, project, host, "address", reason, now)
    return {**outcome, "status": FAILED, "retry": False}
