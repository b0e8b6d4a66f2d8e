"""Fixtures that start real services: Redis, Postgres, the demo site, worker and beat processes.

Service URLs come from CRAWLCLUSTER_TEST_REDIS_URL and CRAWLCLUSTER_TEST_DATABASE_URL,
with local defaults. A missing service is a failure that says how to start it, never a skip.
Processes started here are stopped by PID at teardown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

# Each test session gets its own Redis key prefix and its own Postgres database (created
# beside the configured one), so two sessions on one machine never see each other's
# queues or rows. Set before crawlcluster reads its settings.
SESSION_TAG = f"t{os.getpid()}"
os.environ["CRAWLCLUSTER_BROKER_KEY_PREFIX"] = f"{SESSION_TAG}:"
# the test spiders live in tests/ (tests.spiders, tests.poison_spiders, ...): workers and
# submits of this session may import them, and nothing else but crawlcluster's own
os.environ["CRAWLCLUSTER_SPIDER_PACKAGES"] = "tests"

import pytest  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from crawlcluster import db, schema, settings  # noqa: E402
from crawlcluster.devtools.local_cluster import LocalCluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CRAWLCLUSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASE_URL = os.environ.get("CRAWLCLUSTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
START_SERVICES = "bash deploy/local/services.sh"
KEY_PREFIX = os.environ["CRAWLCLUSTER_BROKER_KEY_PREFIX"]


ALL_FAULTS_ENV = "CRAWLCLUSTER_TEST_ALL_FAULTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-faults", action="store_true",
        help="also run the long fault tests (marked long_fault; or set CRAWLCLUSTER_TEST_ALL_FAULTS=1): "
             "each kind of fault keeps one test in every run, these add its other variants")


# Test files that start Chromium: under `-n 3 --dist loadgroup` they run one after the other in
# one process. Two at once beside the rest on 2 cores starved the browsers: a page's 'load'
# wait and the hung-browser watchdog (6 s) fired on pages that were only slow (CI, load 15-20).
CHROMIUM_FILES = frozenset({"test_render.py", "test_renderer.py", "test_browser_guard.py", "test_console.py"})
# Files whose tests share a costly module or session fixture (a fresh venv with pip install, a
# crawled console): each xdist process would build its own, so each file stays in one process.
ONE_PROCESS_FILES = frozenset({"test_clean_install.py", "test_scaffold.py", "test_console_debugger.py",
                               "test_demo_site.py"})


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The style and type checks (tests/test_style.py: ruff, mypy) run first: a finding is
    reported in the first minute of a CI run, not after the suite. The Chromium tests share
    one xdist group (CHROMIUM_FILES), queued right after them so that group does not end the run
    last. The long fault tests are deselected (pytest reports how many) unless ``--all-faults``
    asks for them."""
    for item in items:
        if item.path.name in CHROMIUM_FILES:
            item.add_marker(pytest.mark.xdist_group("chromium"))
        elif item.path.name in ONE_PROCESS_FILES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    # stable: the rest keep their order
    items.sort(key=lambda item: (item.path.name != "test_style.py", item.path.name not in CHROMIUM_FILES))
    if config.getoption("--all-faults") or os.environ.get(ALL_FAULTS_ENV, "") not in ("", "0"):
        return
    long_ones = [item for item in items if item.get_closest_marker("long_fault")]
    if long_ones:
        config.hook.pytest_deselected(items=long_ones)
        items[:] = [item for item in items if not item.get_closest_marker("long_fault")]
    workeroutput = getattr(config, "workeroutput", None)  # an xdist worker: its controller reports
    if workeroutput is not None:
        workeroutput[LONG_FAULTS_LEFT_OUT] = len(long_ones)


LONG_FAULTS_LEFT_OUT = "long_fault_deselected"
_left_out_by_workers: list[int] = []


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, called on the controller
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001
    """Under ``-n`` the workers collect and deselect, and pytest's summary line leaves their
    deselections out: each worker hands its count of long fault tests left out back here."""
    count = getattr(node, "workeroutput", {}).get(LONG_FAULTS_LEFT_OUT)
    if count is not None:
        _left_out_by_workers.append(int(count))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    if _left_out_by_workers and max(_left_out_by_workers):
        terminalreporter.write_line(f"{max(_left_out_by_workers)} long fault tests deselected "
                                    "(run them with --all-faults; README: Tests)")


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test reads the settings from the environment it sets (the process caches them:
    settings.current()), and leaves no in-process override behind for the next one."""
    settings.reset()
    yield
    settings.reset()


def _flush_prefixed(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it with `{START_SERVICES}` "
                    "or point CRAWLCLUSTER_TEST_REDIS_URL at one", pytrace=False)
    yield REDIS_URL
    _flush_prefixed(client)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of this session's own, created beside CRAWLCLUSTER_TEST_DATABASE_URL."""
    base = db.normalize_database_url(DATABASE_URL)
    server, _, name = base.rpartition("/")
    session_db = f"{name}_{SESSION_TAG}"
    try:
        admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{session_db}"'))
            conn.execute(text(f'CREATE DATABASE "{session_db}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Postgres is not reachable at {DATABASE_URL} ({exc}); start it with `{START_SERVICES}` "
                    "or point CRAWLCLUSTER_TEST_DATABASE_URL at one", pytrace=False)
    yield f"{server}/{session_db}"
    db.dispose_all()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{session_db}" WITH (FORCE)'))
    admin.dispose()


def _drop_everything(url: str) -> None:
    # every table the schema declares (later migrations add theirs), then Alembic's own
    tables = ", ".join([table.name for table in schema.metadata.sorted_tables] + ["alembic_version"])
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {tables} CASCADE"))
    engine.dispose()


@pytest.fixture
def pg(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty crawlcluster schema in the test Postgres and an empty test Redis database;
    this process's settings point at both."""
    db.dispose_all()
    _drop_everything(database_url)
    _flush_prefixed(redis.Redis.from_url(redis_url))
    monkeypatch.setenv("CRAWLCLUSTER_DATABASE_URL", database_url)
    monkeypatch.setenv("CRAWLCLUSTER_BROKER_URL", redis_url)
    settings.reset()
    db.get_engine(database_url)
    yield database_url
    db.dispose_all()


@pytest.fixture
def pg_unmigrated(database_url: str) -> Iterator[str]:
    """The test Postgres database emptied and left without a schema, for a test that migrates
    it step by step."""
    db.dispose_all()
    _drop_everything(database_url)
    yield database_url
    db.dispose_all()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    db.dispose_all()
    url = f"sqlite:///{tmp_path / 'frontier.db'}"
    db.get_engine(url)
    yield url
    db.dispose_all()


@pytest.fixture(scope="session")
def site_server():
    """The 300-page demo site with every trap, served on 127.0.0.1 for the whole session."""
    from crawlcluster.devtools.demo_site import DemoSite

    server = DemoSite(pages=300, traps=True).serve()
    yield server
    server.stop()


@pytest.fixture
def site(site_server):
    site_server.reset_hits()
    return site_server


def cluster_env(database_url: str, broker_url: str) -> dict[str, str]:
    """This process's environment for cluster processes on ``database_url`` and
    ``broker_url``, with this checkout first on their import path."""
    env = dict(os.environ)
    env.update({
        "CRAWLCLUSTER_DATABASE_URL": database_url,
        "CRAWLCLUSTER_BROKER_URL": broker_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PYTHONUNBUFFERED": "1",
        "CRAWLCLUSTER_SPIDER_PACKAGES": "tests",  # the test spiders, and crawlcluster's own
    })
    return env


@pytest.fixture
def processes(pg: str, redis_url: str, tmp_path: Path) -> Iterator[LocalCluster]:
    """Real `celery -A crawlcluster` worker and beat processes on the test Redis and Postgres."""
    cluster = LocalCluster(cluster_env(pg, redis_url), log_dir=tmp_path)
    yield cluster
    cluster.stop_all()


@pytest.fixture
def test_app(redis_url: str):
    """A Celery app on the test Redis with the cluster's configuration, for tests that read
    the queues themselves (tests/queues.py)."""
    from celery import Celery

    app = Celery("crawlcluster-test")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = redis_url
    return app
