"""The dispatcher's parts alone: host slots, token buckets, project admission, the recount
policy, routing and the robots gate (the last on a real Postgres)."""

from __future__ import annotations

import time

from sqlalchemy import select

from crawlcluster.database.hosts import upsert_host
from crawlcluster.db import get_engine
from crawlcluster.dispatch.housekeeping import (
    QUEUED_RECOUNT_IDLE_SECONDS,
    QUEUED_RECOUNT_MAX_SECONDS,
    InFlightCounts,
)
from crawlcluster.dispatch.limits import (
    FULL_HOST_POLL_SECONDS,
    HostSlots,
    ProjectAdmission,
    Slot,
    TokenBucket,
)
from crawlcluster.dispatch.robots import RobotsCache
from crawlcluster.dispatch.robots_gate import NoRobotsCheck, RobotsGate
from crawlcluster.dispatch.routing import Router
from crawlcluster.schema import ROBOTS_CALLBACK, ROBOTS_FETCHING, ROBOTS_OK, crawl_tasks, hosts, projects
from crawlcluster.stages import FETCH, RENDER


def project_row(name: str = "p", *, rate=None, burst=None, queue_limit=None, consecutive_failures=0) -> dict:
    return {"name": name, "rate": rate, "burst": burst, "queue_limit": queue_limit,
            "consecutive_failures": consecutive_failures, "settings": {}}


def test_a_slot_without_delay_takes_up_to_its_limit():
    slot = Slot("h.test", max_in_flight=2)
    slot.take(0.0)
    assert slot.can_take(0.0)
    slot.take(0.0)
    assert not slot.can_take(0.0)
    slot.observe(1, 1.0)  # one finished
    assert slot.can_take(1.0)
    assert str(slot) == "<Slot h.test in_flight=1/2 delay=0.0s>"


def test_a_slot_with_a_delay_takes_one_at_a_time_and_waits_from_when_it_was_seen_to_finish():
    slot = Slot("h.test", max_in_flight=5, delay_seconds=2.0)
    slot.take(10.0)
    assert not slot.can_take(10.0)
    slot.observe(0, 11.0)  # seen finished at 11: the delay counts from there
    assert not slot.can_take(12.5)
    assert slot.can_take(13.0)


def test_host_slots_take_project_and_per_host_settings_and_robots_crawl_delay():
    slots = HostSlots(concurrency=4, delay_seconds=0.0)
    assert slots.slot("a.test", {}, None, {}).max_in_flight == 4
    b_test = {"per_host_concurrency": 7, "per_host_delay": 0.5}
    options = {"per_host_concurrency": 2, "hosts": {"b.test": b_test}}
    assert slots.slot("a.test", options, None, {}).max_in_flight == 2  # the same slot, limits of now
    b = slots.slot("b.test", options, None, {"b.test": 3})
    assert (b.max_in_flight, b.delay_seconds, b.in_flight) == (7, 0.5, 3)  # starts from the count
    assert slots.slot("c.test", {"per_host_delay": 1.0}, 3.0, {}).delay_seconds == 3.0  # Crawl-delay wins
    assert slots.get("b.test") is b and len(slots) == 3
    slots.clear()
    assert slots.get("b.test") is None and list(slots) == []


def test_host_slots_say_which_hosts_are_blocked_and_when_to_look_again():
    slots = HostSlots(concurrency=1, delay_seconds=0.0)
    assert slots.next_wait(0.0, idle_seconds=0.7) == 0.7
    slots.slot("full.test", {}, None, {}).take(0.0)
    assert slots.blocked(0.0) == {"full.test"}
    assert slots.next_wait(0.0, idle_seconds=0.7) == FULL_HOST_POLL_SECONDS
    slots.clear()
    slots.slot("slow.test", {"per_host_delay": 0.3}, None, {}).take(0.0)
    assert slots.blocked(0.0) == {"slow.test"}
    assert abs(slots.next_wait(0.1, idle_seconds=0.7) - 0.2) < 1e-9
    slots.observe({}, 0.2)  # finished: waits for its delay from now
    assert slots.blocked(0.4) == {"slow.test"} and slots.blocked(0.6) == set()



def test_a_host_with_rows_in_flight_is_given_more_once_its_refill_share_is_free():
    # 64 slots, a quarter to refill but at most a fetch batch of 16: rows go out 16 at a time
    slots = HostSlots(concurrency=64, delay_seconds=0.0, refill_fraction=0.25, refill_most=16)
    slot = slots.slot("big.test", {}, None, {"big.test": 60})
    assert slot.refill == 16
    assert slot.can_take(0.0) and not slot.can_start(0.0)  # 4 free: waits for 12 more
    assert slots.blocked(0.0) == {"big.test"}
    assert slots.next_wait(0.0, idle_seconds=0.7) == FULL_HOST_POLL_SECONDS
    slots.observe({"big.test": 48}, 1.0)  # 16 free
    assert slot.can_start(1.0) and slots.blocked(1.0) == set()
    for _ in range(16):  # once started, a claim fills the host up to its limit
        assert slot.can_take(1.0)
        slot.take(1.0)
    assert not slot.can_take(1.0)
    slots.observe({}, 2.0)
    assert slot.can_start(2.0)  # nothing in flight: always
    # a small limit refills one slot at a time (at least one); 0 keeps the old rule
    assert slots.slot("small.test", {"per_host_concurrency": 3}, None, {}).refill == 1
    plain = HostSlots(concurrency=64, delay_seconds=0.0).slot("p.test", {}, None, {"p.test": 63})
    assert plain.refill == 1 and plain.can_start(0.0)

def test_a_token_bucket_refills_at_its_rate_up_to_its_burst():
    bucket = TokenBucket(rate=2.0, burst=3.0, tokens=0.0, updated_at=0.0)
    assert bucket.available(1.0) == 2.0
    assert bucket.available(10.0) == 3.0
    bucket.consume(3)
    assert bucket.seconds_until(1) == 0.5
    unlimited = TokenBucket(None, None)
    assert not unlimited.limited
    assert unlimited.available() == float("inf") and unlimited.seconds_until(5) == 0.0


def test_admission_applies_the_queue_limit_the_trial_and_the_bucket():
    admission = ProjectAdmission(max_queued_per_project=100, auto_pause_failures=5, trial_size=2)
    assert admission.room(project_row(), share=50, queued=0).rows == 50
    room = admission.room(project_row(), share=50, queued=80)
    assert (room.rows, room.held_back) == (20, True)
    assert admission.room(project_row(queue_limit=10), share=50, queued=4).rows == 6
    room = admission.room(project_row(consecutive_failures=5), share=50, queued=1)
    assert (room.rows, room.held_back) == (1, True)  # on trial after an auto-pause
    # a rate-limited project starts with an empty bucket: no room, and the wait for a token
    room = admission.room(project_row("slow", rate=4.0, burst=4.0), share=50, queued=0)
    assert room.rows == 0 and 0 < room.wait <= 0.25
    bucket = admission.buckets["slow"]
    bucket.tokens, bucket.updated_at = 4.0, time.monotonic()
    assert admission.room(project_row("slow", rate=4.0, burst=4.0), share=50, queued=0).rows == 4
    admission.consume("slow", 4)
    assert bucket.tokens <= 0.01


def test_in_flight_counts_are_recounted_only_while_a_limit_holds_rows_back():
    counts = InFlightCounts()
    assert counts.due(time.time())  # never counted: due at once
    counts.counted_at, counts.counted_rows, counts.held_back = 100.0, 0, False
    assert not counts.due(100.0 + QUEUED_RECOUNT_IDLE_SECONDS / 2)  # nothing held back
    assert counts.due(100.0 + QUEUED_RECOUNT_IDLE_SECONDS)
    counts.hold_back()
    assert counts.due(100.0)  # few queued: on every tick
    counts.counted_rows = 10**9  # many queued: at most every QUEUED_RECOUNT_MAX_SECONDS
    assert not counts.due(100.0 + QUEUED_RECOUNT_MAX_SECONDS / 2)
    assert counts.due(100.0 + QUEUED_RECOUNT_MAX_SECONDS)
    counts.counted_at, counts.held_back = 100.0, False
    counts.recount_next_tick()
    assert counts.due(100.0)
    counts.add_claimed("p", 3)
    counts.add_claimed("p", 2)
    assert counts.queued == {"p": 5}


def test_routing_sends_render_rows_to_the_browser_tier_in_their_order():
    router = Router()
    rows = [{"url": "http://a.test/1", "fetch": None}, {"url": "http://a.test/2", "fetch": {"render": True}},
            {"url": "http://a.test/3", "fetch": {"render": False}}, {"url": "http://a.test/4"}]
    assert [router.route("p", row) for row in rows] == [FETCH.task, RENDER.task, FETCH.task, FETCH.task]
    assert router.by_task("p", rows) == [(FETCH.task, [rows[0], rows[2], rows[3]]), (RENDER.task, [rows[1]])]


def test_the_robots_gate_asks_for_robots_txt_once_per_host_and_applies_its_rules(pg):
    now = time.time()
    engine = get_engine(pg)
    with engine.begin() as conn:
        conn.execute(projects.insert().values(name="p", spider="crawlcluster.spider:LinkSpider",
                                              status="running", settings={}, tasks_created=0, created_at=now,
                                              updated_at=now))
        upsert_host(conn, "known.test", now, robots_status=ROBOTS_OK,
                    robots_body="User-agent: *\nDisallow: /private\n", crawl_delay=2.0,
                    robots_expires_at=now + 3600)
    candidates = [{"host": host, "url": f"http://{host}{path}", "task_id": f"{host}{path}"}
                  for host, path in [("known.test", "/open"), ("known.test", "/private/x"),
                                     ("new.test", "/a"), ("new.test", "/b")]]
    gate = RobotsGate(RobotsCache("crawlcluster-test"), fetching_timeout=60)
    with engine.begin() as conn:
        check = gate.check(conn, "p", candidates, now)
        assert [check.admits(c) for c in candidates] == [True, False, False, False]
        assert check.crawl_delay("known.test") == 2.0
        assert check.disallowed == ["known.test/private/x"]
        assert [row["url"] for row in check.queued_rows] == ["http://new.test/robots.txt"]
        check.finish()
    with engine.connect() as conn:
        robots_rows = conn.execute(select(crawl_tasks.c.url, crawl_tasks.c.status, crawl_tasks.c.callback)
                                   .where(crawl_tasks.c.callback == ROBOTS_CALLBACK)).all()
        assert [tuple(r) for r in robots_rows] == [("http://new.test/robots.txt", "queued", ROBOTS_CALLBACK)]
        status = conn.execute(select(hosts.c.robots_status).where(hosts.c.host == "new.test")).scalar()
        assert status == ROBOTS_FETCHING
        assert gate.waiting_hosts(conn, now) == {"new.test"}  # held until its robots.txt is in


def test_a_project_that_ignores_robots_txt_admits_every_row():
    check = NoRobotsCheck()
    assert check.admits({"host": "h.test", "url": "http://h.test/private"})
    assert check.crawl_delay("h.test") is None and check.queued_rows == []
    check.finish()
