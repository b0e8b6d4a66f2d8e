"""The task table as a queue: claim order, SKIP LOCKED, lost-message recovery, budgets, the
dispatcher's tick against real Redis, and idempotent storing, on Postgres (and SQLite)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from celery import Celery
from sqlalchemy import event, func, select, update

import crawlcluster
from crawlcluster import settings
from crawlcluster.database import claims, outcomes, tasks
from crawlcluster.database import projects as lifecycle
from crawlcluster.database.counts import count_by_status, has_open_tasks
from crawlcluster.db import get_engine
from crawlcluster.dispatch.dispatcher import Dispatcher
from crawlcluster.messages import claim_batch_size
from crawlcluster.schema import crawl_tasks, projects
from crawlcluster.urls import task_id, url_host
from tests.queues import fetch_messages, raw_fetch_messages
from workers.store import store_pages


def make_project(conn, name: str, status: str = "running", **extra) -> None:
    now = time.time()
    conn.execute(projects.insert().values(name=name, spider="crawlcluster.spider:LinkSpider", status=status,
                                          settings={}, tasks_created=0, created_at=now, updated_at=now,
                                          **extra))


def make_row(project: str, url: str, *, priority: int = 0, due: float | None = None,
             status: str = "pending") -> dict:
    now = time.time()
    return {"task_id": task_id(project, url), "project": project, "url": url, "host": url_host(url),
            "status": status, "priority": priority, "depth": 0, "callback": "parse", "fetch": None,
            "data": None, "retries_left": 0, "next_run_at": now if due is None else due, "created_at": now,
            "updated_at": now}


@pytest.fixture(params=["postgres", "sqlite"])
def database(request):
    if request.param == "postgres":
        return request.getfixturevalue("pg")
    return request.getfixturevalue("sqlite_url")


def test_claim_takes_highest_priority_first_then_oldest_due_and_skips_future_rows(database):
    engine = get_engine(database)
    now = time.time()
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [
            make_row("p", "http://h/low-old", priority=0, due=now - 100),
            make_row("p", "http://h/high-new", priority=5, due=now - 1),
            make_row("p", "http://h/high-old", priority=5, due=now - 50),
            make_row("p", "http://h/mid", priority=2, due=now - 10),
            make_row("p", "http://h/future", priority=9, due=now + 3600),
        ])
    with engine.begin() as conn:
        first = claims.claim_due_tasks(conn, "p", 3, deadline_seconds=60)
        second = claims.claim_due_tasks(conn, "p", 10, deadline_seconds=60)
    assert [r["url"] for r in first] == ["http://h/high-old", "http://h/high-new", "http://h/mid"]
    assert [r["url"] for r in second] == ["http://h/low-old"]
    with engine.connect() as conn:
        states = dict(conn.execute(select(crawl_tasks.c.url, crawl_tasks.c.status)).all())
        deadline = conn.execute(select(crawl_tasks.c.deadline_at).where(crawl_tasks.c.url == "http://h/mid")).scalar_one()
    assert states["http://h/future"] == "pending"
    assert [states[u] for u in ("http://h/high-old", "http://h/mid", "http://h/low-old")] == ["queued"] * 3
    assert deadline == pytest.approx(time.time() + 60, abs=5)


def test_two_schedulers_claiming_at_once_never_get_the_same_row(pg):
    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://h/{i}") for i in range(50)])
    first_conn = engine.connect()
    first_tx = first_conn.begin()
    try:
        first = claims.claim_due_tasks(first_conn, "p", 30, deadline_seconds=60)
        with engine.begin() as second_conn:  # runs while the first transaction holds its row locks
            second = claims.claim_due_tasks(second_conn, "p", 30, deadline_seconds=60)
        first_tx.commit()
    finally:
        first_conn.close()
    assert len(first) == 30 and len(second) == 20
    assert not {r["task_id"] for r in first} & {r["task_id"] for r in second}


def test_rows_queued_past_their_deadline_are_handed_out_again(database):
    engine = get_engine(database)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://h/{i}") for i in range(4)])
        claimed = claims.claim_due_tasks(conn, "p", 4, deadline_seconds=60)
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.url.in_(["http://h/0", "http://h/1"]))
                     .values(deadline_at=time.time() - 1))
    with engine.begin() as conn:
        stale = claims.reclaim_stale_tasks(conn, 100, deadline_seconds=60)
        again = claims.reclaim_stale_tasks(conn, 100, deadline_seconds=60)
    assert len(claimed) == 4
    assert sorted(r["url"] for r in stale) == ["http://h/0", "http://h/1"]
    assert all(r["dispatch_count"] == 2 for r in stale)
    assert again == []


def test_max_pages_budget_is_never_exceeded_and_duplicates_do_not_spend_it(database):
    engine = get_engine(database)
    with engine.begin() as conn:
        make_project(conn, "p", max_pages=10)
    with engine.begin() as conn:
        rows = [make_row("p", f"http://h/{i}") for i in range(6)]
        assert tasks.insert_tasks(conn, "p", rows, max_pages=10) == 6
    with engine.begin() as conn:
        batch = [make_row("p", f"http://h/{i}") for i in range(3, 12)]  # 3 known, 6 new
        assert tasks.insert_tasks(conn, "p", batch, max_pages=10) == 4
    with engine.begin() as conn:
        assert tasks.insert_tasks(conn, "p", [make_row("p", "http://h/99")], max_pages=10) == 0
        assert count_by_status(conn, "p")["pending"] == 10
        assert lifecycle.project_row(conn, "p")["tasks_created"] == 10


def test_max_pages_budget_holds_with_parse_workers_inserting_side_by_side(database):
    """Parse threads inserting different links at once (as the embedded worker's threads
    do) never create more rows than max_pages: the budget is checked one at a time."""
    import threading

    engine = get_engine(database)
    with engine.begin() as conn:
        make_project(conn, "p", max_pages=25)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def parse_worker(n: int) -> None:
        try:
            start.wait(10)
            for batch in range(10):
                with engine.begin() as conn:
                    tasks.insert_tasks(conn, "p", [make_row("p", f"http://h/{n}/{batch}")], max_pages=25)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=parse_worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with engine.connect() as conn:
        assert count_by_status(conn, "p")["pending"] == 25
        assert lifecycle.project_row(conn, "p")["tasks_created"] == 25


def dispatcher_for(app: Celery, database_url: str, **overrides) -> Dispatcher:
    options = dict(claim_batch_size=100, max_queued_per_project=1000, queued_deadline_seconds=60,
                   fetch_batch_size=4, tick_seconds=0.5)
    options.update(overrides)
    own = replace(settings.current(), **options)
    dispatcher = Dispatcher.from_settings(app, own, database_url=database_url)
    # these tests are about claiming and publishing: no robots.txt round, no per-host cap
    dispatcher.obey_robots = False
    dispatcher.per_host_concurrency = 10_000
    return dispatcher


def test_tick_publishes_running_projects_in_batches_and_leaves_paused_ones(pg, test_app):
    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "run")
        make_project(conn, "held", status="paused")
        tasks.insert_tasks(conn, "run", [make_row("run", f"http://h/{i}") for i in range(10)])
        tasks.insert_tasks(conn, "held", [make_row("held", f"http://h/{i}") for i in range(5)])
    dispatcher = dispatcher_for(test_app, pg)
    dispatcher.tick()
    dispatcher.flush()
    messages = fetch_messages(test_app)
    assert [len(m["tasks"]) for m in messages] == [4, 4, 2]
    assert {m["project"] for m in messages} == {"run"}
    assert sorted(t["url"] for m in messages for t in m["tasks"]) == \
        sorted(f"http://h/{i}" for i in range(10))
    with engine.connect() as conn:
        assert count_by_status(conn, "held")["pending"] == 5
        assert count_by_status(conn, "run")["queued"] == 10


def test_a_tick_with_nothing_due_waits_until_the_next_retry_is_due_not_a_whole_poll(pg, test_app):
    """A retry due in a moment: the tick that finds nothing due asks to run again when it is
    due, instead of after tick_seconds (the tail of a crawl whose last pages answered 5xx)."""
    engine = get_engine(pg)
    now = time.time()
    with engine.begin() as conn:
        make_project(conn, "retrying")
        tasks.insert_tasks(conn, "retrying", [make_row("retrying", "http://h/5xx", due=now + 3)])
    dispatcher = dispatcher_for(test_app, pg, tick_seconds=30)
    try:
        assert 0 < dispatcher.tick() <= 3
        dispatcher.flush()
        with engine.connect() as conn:
            assert count_by_status(conn, "retrying")["pending"] == 1  # not sent early
            assert lifecycle.project_row(conn, "retrying")["status"] == "running"
        with engine.begin() as conn:
            conn.execute(update(crawl_tasks).values(next_run_at=now + 3600))
        assert dispatcher.tick() == 30  # an hour away: the poll comes first
    finally:
        dispatcher.close()


def test_a_large_claim_goes_out_in_fewer_fuller_fetch_messages_and_render_rows_keep_the_batch_size(
        pg, test_app):
    """A claim of many rows is sent in at least 32 messages of up to fetch_batch_max URLs
    (fewer messages per URL on a busy frontier); render rows keep fetch_batch_size."""
    engine = get_engine(pg)
    render = [{**make_row("big", f"http://js{i % 3}.test/{i}"), "fetch": {"render": True}} for i in range(10)]
    with engine.begin() as conn:
        make_project(conn, "big")
        tasks.insert_tasks(conn, "big", [make_row("big", f"http://h{i % 50}.test/{i}") for i in range(1000)])
        tasks.insert_tasks(conn, "big", render)
    raw_fetch_messages(test_app)  # what earlier tests left
    dispatcher = dispatcher_for(test_app, pg, claim_batch_size=1010, fetch_batch_size=4, fetch_batch_max=20,
                                max_queued_per_project=2000)
    dispatcher.tick()
    dispatcher.flush()
    sizes = [len(m["tasks"]) for m in fetch_messages(test_app)]
    assert sizes == [20] * 50  # 1,000 rows / 32 messages = 32 URLs each, at most 20
    with test_app.connection() as connection:
        queue = connection.SimpleQueue("render", accept=["msgpack"])
        try:
            render_sizes = []
            while True:
                try:
                    message = queue.get(block=True, timeout=0.5)
                except queue.Empty:
                    break
                render_sizes.append(len(message.decode()[0][0]["tasks"]))
                message.ack()
        finally:
            queue.close()
    assert sorted(render_sizes) == [2, 4, 4]
    with engine.connect() as conn:
        assert count_by_status(conn, "big")["queued"] == 1010


def test_message_size_grows_with_the_claim_within_its_bounds():
    assert claim_batch_size(10, 16, 64) == 16
    assert claim_batch_size(32 * 16, 16, 64) == 16
    assert claim_batch_size(32 * 16 + 1, 16, 64) == 17
    assert claim_batch_size(2000, 16, 64) == 63
    assert claim_batch_size(100_000, 16, 64) == 64
    assert claim_batch_size(100_000, 16, 8) == 16  # a maximum under the batch size changes nothing


def test_tick_keeps_at_most_the_queue_limit_queued_and_drops_nothing(pg, test_app):
    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://h/{i}") for i in range(25)])
    dispatcher = dispatcher_for(test_app, pg, max_queued_per_project=10)
    dispatcher.tick()
    dispatcher.tick()
    dispatcher.flush()
    with engine.connect() as conn:
        counts = count_by_status(conn, "p")
    assert (counts["queued"], counts["pending"]) == (10, 15)
    assert sum(len(m["tasks"]) for m in fetch_messages(test_app)) == 10


def test_tick_marks_a_project_finished_once_nothing_is_pending_or_queued(pg, test_app):
    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", "http://h/only")])
    dispatcher = dispatcher_for(test_app, pg)
    dispatcher.tick()
    dispatcher.flush()  # the claim is committed
    with engine.connect() as conn:
        assert lifecycle.project_row(conn, "p")["status"] == "running"  # queued, not done
    store_pages(engine, "p", [{"id": task_id("p", "http://h/only"), "url": "http://h/only", "status": "done",
                               "code": 200, "items": [{"a": 1}]}])
    dispatcher.tick()
    with engine.connect() as conn:
        row = lifecycle.project_row(conn, "p")
    assert row["status"] == "finished" and row["finished_at"] is not None


def test_an_auto_recrawl_row_going_back_from_queued_to_pending_leaves_its_project_open(pg):
    """The re-crawl test that once saw its project finished: the scheduler asks "anything
    pending or queued?" while the store stage commits an auto-recrawl row's outcome, which
    moves it from queued to pending (due again after its age). Read in two statements under
    READ COMMITTED, the row was queued when pending was looked for and pending when queued
    was: nothing open. Here the store commits right after the check's first statement."""
    engine = get_engine(pg)
    row = make_row("ticks", "http://h/tick", status="queued")
    row.update(auto_recrawl=True, age=1, deadline_at=time.time() + 60)
    with engine.begin() as conn:
        make_project(conn, "ticks")
        tasks.insert_tasks(conn, "ticks", [row])
    with engine.connect() as store, engine.connect() as check:
        stored = store.begin()
        outcomes.record_outcomes(store, [{"task_id": row["task_id"], "status": "done", "status_code": 200}])
        statements: list[str] = []

        def commit_the_store_after_the_first_statement(*args) -> None:
            statements.append(args[2])
            if stored.is_active:
                stored.commit()

        event.listen(check, "after_cursor_execute", commit_the_store_after_the_first_statement)
        with check.begin():
            assert has_open_tasks(check, "ticks")
        assert statements and not stored.is_active  # the store did commit in the middle of the check
    with engine.connect() as conn:
        assert conn.execute(select(crawl_tasks.c.status).where(
            crawl_tasks.c.task_id == row["task_id"])).scalar() == "pending"


def test_the_scheduler_is_woken_by_the_commit_that_adds_work_and_not_before(pg):
    """Work notices (Postgres LISTEN/NOTIFY): a transaction that adds rows or ends rows wakes
    a waiting scheduler when it commits; nothing wakes it before, and a rolled-back one never
    does."""
    from crawlcluster.database.wakeup import WorkListener
    from workers.lease import WorkerLease

    engine = get_engine(pg)
    listener = WorkListener(engine)
    try:
        assert listener.wait(0) is False  # listening from now on
        with engine.begin() as conn:
            make_project(conn, "wake")
            assert listener.wait(0) is False  # a project alone is no work
        adding = engine.connect()
        transaction = adding.begin()
        tasks.insert_tasks(adding, "wake", [make_row("wake", "http://h/new")])
        assert listener.wait(0.2) is False  # not committed yet: the rows are not visible
        transaction.rollback()
        assert listener.wait(0.2) is False
        with adding.begin():
            tasks.insert_tasks(adding, "wake", [make_row("wake", "http://h/new")])
        adding.close()
        assert listener.wait(30) is True
        assert listener.wait(0) is False  # one commit, one wake-up
        row = make_row("wake", "http://h/queued", status="queued")
        row.update(queued_at=time.time(), deadline_at=time.time() + 60, dispatch_count=1)
        with engine.begin() as conn:
            conn.execute(crawl_tasks.insert().values(**row))
        lease = WorkerLease(engine, 30, 10)
        try:
            lease.hold({row["task_id"]: 1})  # a worker's hold ends nothing and adds nothing
        finally:
            lease.stop()
        assert listener.wait(0.2) is False
        with engine.begin() as conn:  # the store stage ends the row
            outcomes.record_outcomes(conn, [{"task_id": row["task_id"], "status": "done",
                                             "status_code": 200}])
        assert listener.wait(30) is True
    finally:
        listener.close()


def test_counts_by_state_and_deletion_see_rows_in_every_state(database):
    """Queued rows are left out of the per-project index by state (claims stay cheap):
    counts and deletion find them through the index of queued rows."""
    from crawlcluster.schema import TASK_STATES

    engine = get_engine(database)
    with engine.begin() as conn:
        make_project(conn, "gone", status="cancelled", delete_at=time.time() - 1)
        make_project(conn, "kept")
        for project in ("gone", "kept"):
            tasks.insert_tasks(conn, project, [make_row(project, f"http://h/{state}/{i}", status=state)
                                                  for state in TASK_STATES for i in range(3)])
    with engine.connect() as conn:
        assert count_by_status(conn, "kept") == dict.fromkeys(TASK_STATES, 3)
        assert has_open_tasks(conn, "kept")
    removed, calls = [], 0
    while not removed and calls < 20:  # 18 rows, at most 4 per call and step
        calls += 1
        with engine.begin() as conn:
            removed = lifecycle.delete_due_projects(conn, batch_rows=4)
    assert removed == ["gone"] and calls > 1
    with engine.connect() as conn:
        assert count_by_status(conn, "gone") == dict.fromkeys(TASK_STATES, 0)
        assert not has_open_tasks(conn, "gone")
        assert lifecycle.project_row(conn, "gone") is None
        assert count_by_status(conn, "kept") == dict.fromkeys(TASK_STATES, 3)


def test_storing_a_page_twice_leaves_its_items_once_and_replaces_them(database):
    engine = get_engine(database)
    url = "http://h/page"
    tid = task_id("p", url)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", url)])
        claims.claim_due_tasks(conn, "p", 1, deadline_seconds=60)
    page = {"id": tid, "url": url, "status": "done", "code": 200, "items": [{"n": 1}, {"n": 2}, {"n": 3}]}
    store_pages(engine, "p", [page])
    # the same outcome again (a redelivered message): the row is done already, nothing changes
    assert store_pages(engine, "p", [{**page, "items": [{"n": 7}]}])["done"] == 0
    assert sorted(i["n"] for i in crawlcluster.Crawl("p", database_url=database).results()) == [1, 2, 3]
    # the page crawled again (forced): its new items replace the old ones
    with engine.begin() as conn:
        tasks.insert_tasks(conn, "p", [{**make_row("p", url), "_force": True}])
        claims.claim_due_tasks(conn, "p", 1, deadline_seconds=60)
    store_pages(engine, "p", [{**page, "items": [{"n": 9}]}])
    assert [i["n"] for i in crawlcluster.Crawl("p", database_url=database).results()] == [9]
    stats = crawlcluster.Crawl("p", database_url=database).stats()
    assert (stats["done"], stats["items"]) == (1, 1)


def test_pause_resume_and_cancel_change_what_the_scheduler_may_dispatch(pg, test_app):
    crawl = crawlcluster.submit(["http://site.invalid/a", "http://site.invalid/b"], project="steer",
                                database_url=pg)
    crawl.pause()
    dispatcher = dispatcher_for(test_app, pg)
    dispatcher.tick()
    assert crawl.stats()["pending"] == 2 and crawl.stats()["status"] == "paused"
    crawl.resume()
    dispatcher.tick()
    dispatcher.flush()
    assert crawl.stats()["queued"] == 2
    crawlcluster.submit(["http://site.invalid/c"], project="steer", database_url=pg)
    crawl.cancel()
    stats = crawl.stats()
    assert (stats["status"], stats["cancelled"], stats["queued"]) == ("cancelled", 1, 2)


def test_batch_publisher_sends_what_send_task_sends_in_one_pipeline(test_app):
    from crawlcluster.publish import BatchPublisher, send

    payload = {"project": "p", "tasks": [{"id": "a", "url": "http://h/a"}, {"id": "b", "url": "http://h/b"}]}
    raw_fetch_messages(test_app)  # what earlier tests left
    send(test_app, "crawlcluster.fetch", payload)
    assert BatchPublisher(test_app).publish([("crawlcluster.fetch", payload)] * 3) == 3
    reference, *batched = raw_fetch_messages(test_app)
    assert len(batched) == 3
    assert len({m.headers["id"] for m in [reference, *batched]}) == 4  # a task id of its own each
    for message in batched:
        assert message.decode() == reference.decode()
        assert message.content_type == reference.content_type == "application/x-msgpack"
        assert message.delivery_info["routing_key"] == reference.delivery_info["routing_key"] == "fetch"
        for key in ("task", "argsrepr", "lang", "retries", "parent_id", "eta", "expires", "ignore_result"):
            assert message.headers[key] == reference.headers[key], key
        assert message.headers["root_id"] == message.headers["id"]  # a task with no parent is its own root
        assert message.headers["argsrepr"] == "p: 2 URLs: http://h/a, http://h/b"


def test_a_host_limit_holds_between_recounts_of_the_queued_rows(pg, test_app, monkeypatch):
    """Once many rows are queued the scheduler recounts them less often; between recounts
    it adds up its own sends, so a host never gets more than its limit."""
    import crawlcluster.dispatch.housekeeping as recount_policy

    monkeypatch.setattr(recount_policy, "QUEUED_RECOUNT_MAX_SECONDS", 3600.0)
    monkeypatch.setattr(recount_policy, "QUEUED_ROWS_PER_SECOND", 1)  # any queued row: no recount
    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://one.test/{i}") for i in range(20)]
                              + [make_row("p", f"http://two.test/{i}") for i in range(20)])
    dispatcher = dispatcher_for(test_app, pg)
    dispatcher.per_host_concurrency = 3
    for _ in range(4):
        dispatcher.tick()
    dispatcher.flush()
    with engine.connect() as conn:
        queued = dict(conn.execute(select(crawl_tasks.c.host, func.count())
                                   .where(crawl_tasks.c.status == "queued")
                                   .group_by(crawl_tasks.c.host)).all())
    assert queued == {"one.test": 3, "two.test": 3}
    # the pages are fetched: after a recount the hosts take three more each
    with engine.begin() as conn:
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.status == "queued").values(status="done"))
    dispatcher.tick()
    with engine.connect() as conn:
        assert count_by_status(conn, "p")["queued"] == 0  # still counted as in flight
    monkeypatch.setattr(recount_policy, "QUEUED_RECOUNT_MAX_SECONDS", 0.0)
    dispatcher.tick()
    dispatcher.flush()
    with engine.connect() as conn:
        assert count_by_status(conn, "p")["queued"] == 6


def test_queued_rows_are_recounted_only_once_a_limit_holds_rows_back(pg, test_app, monkeypatch):
    """A recount can only lower what the scheduler believes is in flight: while no host is
    full and no project is at its in-queue limit, ticks do not read the queued rows again."""
    import crawlcluster.dispatch.housekeeping as recount_policy

    monkeypatch.setattr(recount_policy, "QUEUED_RECOUNT_MAX_SECONDS", 0.0)  # as often as needed
    counts = []
    queued_counts = claims.queued_counts
    monkeypatch.setattr(claims, "queued_counts", lambda conn: counts.append(1) or queued_counts(conn))
    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://one.test/{i}") for i in range(30)])
    dispatcher = dispatcher_for(test_app, pg, claim_batch_size=4, fetch_batch_size=1)
    for _ in range(3):
        dispatcher.tick()
    dispatcher.flush()
    assert len(counts) == 1  # the first tick's: nothing was held back since
    dispatcher.per_host_concurrency = 13  # one.test has 12 in flight: one more, then it is full
    dispatcher.tick()
    dispatcher.flush()
    assert len(counts) == 1
    dispatcher.tick()  # recounts: the host was full
    dispatcher.flush()
    assert len(counts) == 2
    with engine.connect() as conn:
        assert count_by_status(conn, "p")["queued"] == 13
    # the pages are fetched; the next recount frees the host
    with engine.begin() as conn:
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.status == "queued").values(status="done"))
    for _ in range(2):
        dispatcher.tick()
    dispatcher.flush()
    with engine.connect() as conn:
        assert count_by_status(conn, "p")["queued"] == 4 + 4


def test_claims_committed_by_the_thread_never_overlap_and_each_row_is_sent_once(pg, test_app):
    """On Postgres a claim's rows are marked queued and committed by another thread while
    the next ticks read: SKIP LOCKED passes over the rows still in hand, so ticks run back
    to back without a flush claim every row exactly once."""
    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://h{i % 7}.test/{i}") for i in range(95)])
    raw_fetch_messages(test_app)  # what earlier tests left
    dispatcher = dispatcher_for(test_app, pg, claim_batch_size=10, fetch_batch_size=3)
    assert dispatcher.pipeline.threaded

    def pending() -> int:
        with engine.connect() as conn:
            return count_by_status(conn, "p")["pending"]

    # ten claims take every row; a tick may find only rows still locked by claims in hand
    # (the last rows of the frontier, read as spare candidates), so tick until none is left
    for _ in range(60):
        dispatcher.tick()
        if pending() == 0:
            break
    dispatcher.flush()
    sent = [task["id"] for message in raw_fetch_messages(test_app)
            for task in message.decode()[0][0]["tasks"]]
    assert len(sent) == len(set(sent)) == 95
    with engine.connect() as conn:
        assert count_by_status(conn, "p")["queued"] == 95
        assert conn.execute(select(func.max(crawl_tasks.c.dispatch_count))).scalar() == 1


def test_a_claim_is_fenced_at_its_commit_and_rolled_back_when_the_lease_moved(pg, test_app):
    """The lease is checked in the claim's transaction just before it commits: once another
    scheduler holds it, the claim rolls back, its rows stay pending and nothing is sent."""
    from crawlcluster.dispatch.lease import LeaseLost
    from crawlcluster.schema import scheduler_lease

    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://h.test/{i}") for i in range(30)])
    raw_fetch_messages(test_app)
    dispatcher = dispatcher_for(test_app, pg, claim_batch_size=10)
    dispatcher.tick()
    dispatcher.flush()
    assert len(raw_fetch_messages(test_app)) == 3  # the leader's first claim: 10 rows, 4 per message
    # another scheduler takes the lease over (as after this one stalled past its expiry)
    with engine.begin() as conn:
        conn.execute(update(scheduler_lease).values(holder="standby", token=scheduler_lease.c.token + 1,
                                                    expires_at=time.time() + 3600))
    dispatcher.housekeeping.last_run_at = time.time()  # no housekeeping (it would notice first)
    with pytest.raises(LeaseLost):
        dispatcher.tick()
        dispatcher.flush()
    with engine.connect() as conn:
        counts = count_by_status(conn, "p")
    assert (counts["queued"], counts["pending"]) == (10, 20)
    assert raw_fetch_messages(test_app) == []


def test_a_host_limit_holds_while_a_claim_waits_for_its_commit(pg, test_app, monkeypatch):
    """A recount while an earlier claim is still uncommitted adds that claim's rows to what
    the table says, so the host does not get its limit twice."""
    import threading

    engine = get_engine(pg)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [make_row("p", f"http://one.test/{i}") for i in range(20)])
    # a claim locks at most twice its batch: the second tick still finds rows to take
    dispatcher = dispatcher_for(test_app, pg, claim_batch_size=3, fetch_batch_size=1)
    dispatcher.per_host_concurrency = 3
    gate = threading.Event()
    commit = dispatcher.pipeline.commit

    def held_commit(claim):
        assert gate.wait(30)
        return commit(claim)

    monkeypatch.setattr(dispatcher.pipeline, "commit", held_commit)
    dispatcher.tick()  # claims 3, held before its commit
    dispatcher.slots.clear()  # forget what this scheduler sent: only the recount may say it
    dispatcher.counts.recount_next_tick()
    dispatcher.tick()
    gate.set()
    dispatcher.flush()
    with engine.connect() as conn:
        assert count_by_status(conn, "p")["queued"] == 3


def test_a_narrow_claim_read_filled_for_the_chosen_rows_equals_the_full_read_and_drops_rows_gone(sqlite_url):
    """SQLite claims read only what they choose by, then the chosen rows' other columns: the
    rows sent are the same as with every column read at once, and a row cancelled between
    the two reads is not sent."""
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:
        make_project(conn, "p")
        tasks.insert_tasks(conn, "p", [{**make_row("p", f"http://h/{i}", priority=i % 3),
                                        "fetch": {"retries": i}, "data": {"n": i}} for i in range(12)])
    with engine.connect() as conn:
        assert claims.reads_narrow(conn)
        full = claims.due_candidates(conn, "p", 12)
        narrow = claims.due_candidates(conn, "p", 12, narrow=True)
        assert [set(row) for row in narrow] == [{"task_id", "url", "host"}] * 12
        assert [row["task_id"] for row in narrow] == [row["task_id"] for row in full]
        chosen = narrow[::2]
        gone = chosen[1]["task_id"]
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id == gone).values(status="cancelled"))
        filled = claims.fill_candidates(conn, chosen)
    expected = [row for row in full[::2] if row["task_id"] != gone]
    assert filled == expected
