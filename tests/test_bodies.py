"""Page bodies beside the parse message (crawlcluster/bodies.py), on the test Redis: written
once in one key under the broker's prefix, read back byte for byte, deleted by parse, a
gone key said in a sentence; and kept in the message on a transport that is not Redis."""

from __future__ import annotations

import random

import pytest
import redis
from celery import Celery

from crawlcluster import bodies
from crawlcluster.messages import BODIES, BODY_LENGTH, COMPRESSED, Page, ParseMessage, compress_body

from .conftest import KEY_PREFIX

WORDS = "crawler frontier worker queue broker politeness robots host link page graph depth".split()


def _html(n: int) -> bytes:
    rng = random.Random(n)
    text = " ".join(rng.choice(WORDS) for _ in range(3000))
    return f"<html><head><title>page {n}</title></head><body><p>{text}</p></body></html>".encode()


def _message(count: int) -> ParseMessage:
    pages: list[Page] = [{"id": f"t{n}", "url": f"http://e.test/{n}", "code": 200, "body": _html(n),
                          "z": False} for n in range(count)]
    pages.append({"id": "r", "url": "http://e.test/old", "code": 301, "redirect": "http://e.test/new"})
    return {"project": "p", "pages": pages}


@pytest.fixture
def redis_app(redis_url: str) -> Celery:
    app = Celery("bodies-test", broker=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": KEY_PREFIX}
    return app


def test_a_waves_bodies_go_in_one_prefixed_key_and_come_back_byte_for_byte(redis_app: Celery, redis_url: str
                                                                            ) -> None:
    message = _message(8)
    originals = {p["id"]: p["body"] for p in message["pages"] if "body" in p}
    with redis_app.producer_or_acquire() as producer:
        sent = bodies.stash(redis_app, producer, message)
    key = sent[BODIES]["key"]
    assert key.startswith(KEY_PREFIX)  # flushed with the session's other keys
    assert all("body" not in p for p in sent["pages"])
    assert [p.get(BODY_LENGTH) for p in sent["pages"]] == [len(b) for b in originals.values()] + [None]
    client = redis.Redis.from_url(redis_url)
    stored = client.strlen(key)
    alone = sum(len(compress_body(b)[0]) for b in originals.values())
    print(f"8 pages of {sum(map(len, originals.values())):,} bytes: {stored:,} bytes in the key "
          f"({sent[BODIES]['codec']}), {alone:,} compressed one by one")
    assert 0 < stored < alone
    assert 0 < client.ttl(key) <= 3600

    pages = bodies.load(redis_app, sent)
    assert {p["id"]: p["body"] for p in pages if "body" in p} == originals
    assert all(not p.get(COMPRESSED) for p in pages)
    assert "redirect" in pages[-1] and "body" not in pages[-1]
    assert BODY_LENGTH in sent["pages"][0]  # the message itself is left as sent, for a retry

    bodies.drop(redis_app, sent)
    assert not client.exists(key)
    with pytest.raises(bodies.BodiesMissing, match="no longer in Redis.*body_key_ttl_seconds=3600"):
        bodies.load(redis_app, sent)


def test_with_the_ttl_at_zero_bodies_stay_in_the_message(redis_app: Celery, monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("CRAWLCLUSTER_BODY_KEY_TTL_SECONDS", "0")
    with redis_app.producer_or_acquire() as producer:
        sent = bodies.stash(redis_app, producer, _message(2))
    assert BODIES not in sent and all(p.get(COMPRESSED) for p in sent["pages"] if "body" in p)
    assert bodies.load(redis_app, sent) == sent["pages"]


def test_on_the_memory_transport_each_body_stays_in_its_page_compressed() -> None:
    app = Celery("bodies-memory", broker="memory://", set_as_current=False)
    message = _message(3)
    originals = [p["body"] for p in message["pages"] if "body" in p]
    with app.producer_or_acquire() as producer:
        sent = bodies.stash(app, producer, message)
    assert BODIES not in sent
    from crawlcluster.messages import decompress_body

    assert [decompress_body(p) for p in bodies.load(app, sent) if "body" in p] == originals


def test_a_parse_message_whose_bodies_key_is_gone_leaves_its_rows_queued_saying_so(pg: str) -> None:
    from sqlalchemy import select, update

    import crawlcluster
    from crawlcluster.db import get_engine
    from crawlcluster.schema import QUEUED, crawl_tasks
    from crawlcluster.urls import task_id
    from tasks.parse import parse

    crawlcluster.submit(["http://gone.test/"], project="gone", database_url=pg)
    row_id = task_id("gone", "http://gone.test/")
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id == row_id).values(status=QUEUED))
    page = {"id": row_id, "url": "http://gone.test/", "code": 200, BODY_LENGTH: 9}
    message = {"project": "gone", "pages": [page],
               BODIES: {"key": f"{KEY_PREFIX}crawlcluster.bodies.never-written", "codec": "zstd"}}
    assert parse.run(message) == {"pages": 0, "new_urls": 0, "bodies_missing": 1}
    with engine.begin() as conn:
        status, error = conn.execute(select(crawl_tasks.c.status, crawl_tasks.c.error)
                                     .where(crawl_tasks.c.task_id == row_id)).one()
    assert status == QUEUED  # sent again at its deadline
    assert "the fetched bodies were no longer in Redis" in error and "body_key_ttl_seconds" in error
