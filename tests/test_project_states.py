"""A project's life (crawlcluster/database/projects.py), one test per transition, on real
Postgres and SQLite rows: each allowed move changes the row as the state machine draws it,
and each refused move (pausing a cancelled project, finishing a paused one, resuming a
deleted one, ...) returns False and leaves the row as it was."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from crawlcluster import db
from crawlcluster.client import Crawl
from crawlcluster.database import projects as lifecycle
from crawlcluster.database import tasks
from crawlcluster.errors import ProjectNotFound
from crawlcluster.schema import CANCELLED, FINISHED, PAUSED, RUNNING, projects
from tests.test_frontier import make_row

T0 = 1_000_000.0


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.getfixturevalue("pg" if request.param == "postgres" else "sqlite_url")


@pytest.fixture
def conn(database: str) -> Iterator[Connection]:
    with db.get_engine(database).begin() as connection:
        yield connection


def row(conn: Connection, name: str = "p") -> dict[str, Any] | None:
    found = conn.execute(select(projects).where(projects.c.name == name)).first()
    return None if found is None else dict(found._mapping)


def new(conn: Connection, name: str = "p", now: float = T0, untried: bool = False) -> dict[str, Any]:
    """A new running project; with ``untried`` one page of it waits for its first try (a run
    of failures pauses only a project that still has such pages)."""
    lifecycle.create(conn, name, {"spider": "tests.spiders:Any", "settings": {}}, now)
    if untried:
        tasks.insert_tasks(conn, name, [make_row(name, f"http://{name}.example/untried")])
    return row(conn, name)


def in_state(conn: Connection, state: str, name: str = "p") -> dict[str, Any]:
    """A project brought to ``state`` through the state machine's own moves."""
    new(conn, name, untried=state == "auto-paused")
    if state == "paused":
        assert lifecycle.pause(conn, name, now=T0 + 1)
    elif state == "auto-paused":
        assert lifecycle.record_streak(conn, name, 0, 3, pause_after=3, pause_seconds=60,
                                       last_error="HTTP 500", now=T0 + 1)
    elif state == FINISHED:
        assert lifecycle.finish(conn, name, now=T0 + 1)
    elif state == CANCELLED:
        assert lifecycle.cancel(conn, name, now=T0 + 1)
    return row(conn, name)


def test_a_new_project_runs(conn: Connection) -> None:
    created = new(conn)
    assert created["status"] == RUNNING
    assert (created["created_at"], created["updated_at"], created["finished_at"]) == (T0, T0, None)
    assert created["tasks_created"] == 0


def test_a_person_pauses_a_running_project_and_housekeeping_never_resumes_it(conn: Connection) -> None:
    new(conn)
    assert lifecycle.pause(conn, "p", now=T0 + 5)
    paused = row(conn)
    assert paused["status"] == PAUSED
    assert (paused["pause_reason"], paused["paused_until"]) == ("paused by the user", None)
    assert lifecycle.resume_auto_paused(conn, now=T0 + 10**9) == []
    assert row(conn)["status"] == PAUSED


@pytest.mark.parametrize("state", ["paused", "auto-paused", FINISHED, CANCELLED])
def test_pausing_a_project_that_is_not_running_is_refused(conn: Connection, state: str) -> None:
    before = in_state(conn, state)
    assert not lifecycle.pause(conn, "p", now=T0 + 50)
    assert row(conn) == before


def test_a_run_of_failures_pauses_a_running_project_until_a_time_and_a_success_clears_the_run(
        conn: Connection) -> None:
    new(conn, untried=True)
    def streak(successes: int, failures: int, last_error: str | None = "x") -> bool:
        return lifecycle.record_streak(conn, "p", successes, failures, pause_after=3, pause_seconds=60,
                                       last_error=last_error, now=T0)

    assert not streak(0, 2)
    assert not streak(1, 0, None)
    assert row(conn)["consecutive_failures"] == 0
    assert not streak(0, 2)
    assert streak(0, 1, "HTTP 503")
    paused = row(conn)
    assert (paused["status"], paused["paused_until"], paused["consecutive_failures"]) == (PAUSED, T0 + 60, 3)
    assert paused["pause_reason"].startswith("3 consecutive failures (last: HTTP 503); trying again at ")


def test_a_run_of_failures_with_only_pages_that_failed_before_left_does_not_pause(conn: Connection) -> None:
    """The end of a crawl of a healthy site with a few broken pages: their last retries fail
    one after another with nothing else left to fetch. Pausing would only hold the end of
    the crawl; the run is counted, and the project pauses once an untried page is back."""
    new(conn)
    assert not lifecycle.has_untried_pages(conn, "p")
    assert not lifecycle.record_streak(conn, "p", 0, 5, pause_after=3, pause_seconds=60,
                                       last_error="HTTP 500", now=T0 + 1)
    assert (row(conn)["status"], row(conn)["consecutive_failures"]) == (RUNNING, 5)
    tasks.insert_tasks(conn, "p", [make_row("p", "http://p.example/found-later")])
    assert lifecycle.has_untried_pages(conn, "p")
    assert lifecycle.record_streak(conn, "p", 0, 1, pause_after=3, pause_seconds=60, last_error="HTTP 500",
                                   now=T0 + 2)
    assert row(conn)["status"] == PAUSED


@pytest.mark.parametrize("state", ["paused", FINISHED, CANCELLED])
def test_a_run_of_failures_does_not_pause_a_project_that_is_not_running(conn: Connection, state: str) -> None:
    before = in_state(conn, state)
    assert not lifecycle.record_streak(conn, "p", 0, 5, pause_after=3, pause_seconds=60, last_error="x",
                                       now=T0 + 50)
    after = row(conn)
    assert after["consecutive_failures"] == 5
    assert {**after, "consecutive_failures": 0} == before


def test_housekeeping_resumes_an_auto_paused_project_on_trial_once_its_pause_is_over(
        conn: Connection) -> None:
    in_state(conn, "auto-paused")
    assert lifecycle.resume_auto_paused(conn, now=T0 + 60) == []  # paused until T0 + 61
    assert row(conn)["status"] == PAUSED
    assert lifecycle.resume_auto_paused(conn, now=T0 + 61) == ["p"]
    resumed = row(conn)
    # on trial: the failure run is kept, so one more failure pauses it again
    assert (resumed["status"], resumed["paused_until"], resumed["consecutive_failures"]) == (RUNNING, None, 3)


def test_a_running_project_with_nothing_open_finishes_unless_it_changed_since(conn: Connection) -> None:
    created = new(conn)
    assert not lifecycle.finish(conn, "p", seen_updated_at=created["updated_at"] - 1, now=T0 + 5)
    assert row(conn)["status"] == RUNNING
    assert lifecycle.finish(conn, "p", seen_updated_at=created["updated_at"], now=T0 + 5)
    finished = row(conn)
    assert (finished["status"], finished["finished_at"], finished["updated_at"]) == (FINISHED, T0 + 5, T0 + 5)


@pytest.mark.parametrize("state", ["paused", "auto-paused", FINISHED, CANCELLED])
def test_finishing_a_project_that_is_not_running_is_refused(conn: Connection, state: str) -> None:
    before = in_state(conn, state)
    assert not lifecycle.finish(conn, "p", now=T0 + 50)
    assert row(conn) == before


def test_a_timer_that_adds_rows_runs_a_finished_project_again(conn: Connection) -> None:
    in_state(conn, FINISHED)
    assert lifecycle.reopen_finished(conn, "p", now=T0 + 9)
    again = row(conn)
    assert (again["status"], again["finished_at"], again["updated_at"]) == (RUNNING, None, T0 + 9)


@pytest.mark.parametrize("state", [RUNNING, "paused", "auto-paused", CANCELLED])
def test_a_timer_does_not_reopen_a_project_that_is_not_finished(conn: Connection, state: str) -> None:
    before = in_state(conn, state)
    assert not lifecycle.reopen_finished(conn, "p", now=T0 + 50)
    assert row(conn) == before


@pytest.mark.parametrize("state", [RUNNING, "paused", "auto-paused", FINISHED, CANCELLED])
def test_cancel_stops_a_project_in_every_state(conn: Connection, state: str) -> None:
    in_state(conn, state)
    assert lifecycle.cancel(conn, "p", now=T0 + 7)
    cancelled = row(conn)
    assert (cancelled["status"], cancelled["updated_at"]) == (CANCELLED, T0 + 7)


@pytest.mark.parametrize("state", ["paused", "auto-paused", FINISHED, CANCELLED])
def test_resume_runs_a_project_again_from_every_state_and_forgets_pause_failures_and_deletion(
        conn: Connection, state: str) -> None:
    in_state(conn, state)
    lifecycle.schedule_deletion(conn, "p", T0 + 100)
    assert lifecycle.run_again(conn, "p", now=T0 + 8)
    again = row(conn)
    assert again["status"] == RUNNING
    cleared = ("finished_at", "paused_until", "pause_reason", "delete_at")
    assert [again[k] for k in cleared] == [None] * 4
    assert (again["consecutive_failures"], again["updated_at"]) == (0, T0 + 8)


@pytest.mark.parametrize("state", ["paused", "auto-paused", FINISHED, CANCELLED])
def test_a_submit_runs_a_known_project_again_with_its_new_columns(conn: Connection, state: str) -> None:
    before = in_state(conn, state)
    assert lifecycle.resubmit(conn, "p", {"max_pages": 7}, now=T0 + 9)
    after = row(conn)
    assert (after["status"], after["finished_at"], after["updated_at"]) == (RUNNING, None, T0 + 9)
    assert after["max_pages"] == 7
    # a submit changes the state and the columns it names, nothing else
    kept = ("pause_reason", "paused_until", "consecutive_failures", "created_at", "spider")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}


def test_a_submit_drops_a_planned_deletion(conn: Connection) -> None:
    in_state(conn, CANCELLED)
    assert lifecycle.schedule_deletion(conn, "p", T0 + 100)
    assert lifecycle.resubmit(conn, "p", {}, now=T0 + 50)
    assert row(conn)["delete_at"] is None
    assert lifecycle.due_for_deletion(conn, now=T0 + 10**6) == []


def test_a_deleted_project_goes_once_its_time_has_passed_and_nothing_moves_it_again(
        conn: Connection) -> None:
    in_state(conn, CANCELLED)
    new(conn, "other")
    assert lifecycle.schedule_deletion(conn, "p", T0 + 100)
    assert lifecycle.due_for_deletion(conn, now=T0 + 99) == []
    assert lifecycle.due_for_deletion(conn, now=T0 + 100) == ["p"]
    lifecycle.remove(conn, "p")
    assert row(conn) is None
    assert row(conn, "other")["status"] == RUNNING
    for move in (lifecycle.pause, lifecycle.run_again, lifecycle.finish, lifecycle.cancel,
                 lifecycle.reopen_finished):
        assert not move(conn, "p", now=T0 + 200), move.__name__
    assert not lifecycle.resubmit(conn, "p", {"max_pages": 1}, now=T0 + 200)
    assert row(conn) is None


def test_a_running_project_is_not_deleted_even_past_its_time(conn: Connection) -> None:
    in_state(conn, CANCELLED)
    lifecycle.schedule_deletion(conn, "p", T0 + 100)
    # running again by a path that keeps delete_at (none of the module's does today)
    conn.execute(projects.update().where(projects.c.name == "p").values(status=RUNNING))
    assert row(conn)["delete_at"] == T0 + 100
    assert lifecycle.due_for_deletion(conn, now=T0 + 10**6) == []


def test_the_client_refuses_what_the_state_machine_refuses(database: str) -> None:
    with db.get_engine(database).begin() as conn:
        in_state(conn, CANCELLED)
    crawl = Crawl("p", database_url=database)
    crawl.pause()  # a cancelled project stays cancelled
    with db.get_engine(database).connect() as conn:
        assert row(conn)["status"] == CANCELLED
    with db.get_engine(database).begin() as conn:
        lifecycle.remove(conn, "p")
    with pytest.raises(ProjectNotFound):
        crawl.resume()
    with pytest.raises(ProjectNotFound):
        crawl.pause()
