"""A clean install is a working install: what a newcomer does, in a fresh venv.

The session builds one venv with ``python -m venv`` and ``pip install <a copy of this
checkout>`` (no extras, not editable; pip's cache and the package index are used as they
come). Then, with only that venv's binaries on PATH and no PYTHONPATH, it runs the README's
own command lines against the test session's Redis and Postgres: ``crawlcluster initdb``,
beat and one worker per queue, ``crawlcluster submit ... --wait``, Flower, the metrics
exporter and the embedded ``crawlcluster crawl URL -o FILE``. A dependency the package
forgot to declare (kombu's Redis transport needs ``packaging``) fails here, never skips:
the test environment itself has it, which is how it once went unseen.

A render worker without the ``render`` extra refuses to start with one sentence: started,
it would take render messages a worker with a browser could serve and fail every one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from crawlcluster.devtools.demo_site import DemoSite
from crawlcluster.devtools.local_cluster import LocalCluster
from tests.outcomes import assert_site_crawled, load_rows, target_of
from tests.queues import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# what `pip install .` needs of the checkout; copied so that no build/ left in the
# checkout by an earlier build can put a module into the wheel that the tree lost
PACKAGE_FILES = ("pyproject.toml", "README.md", "celeryconfig.py", "crawlcluster", "workers", "tasks")
PIP_TIMEOUT_SECONDS = 900
START_TIMEOUT_SECONDS = 90
CRAWL_TIMEOUT_SECONDS = 300


def readme_role_commands() -> dict[str, list[str]]:
    """The README's table "The roles and their command lines": {role: argv}."""
    text = README.read_text()
    assert "The roles and their command lines" in text, "README lost its table of role command lines"
    table = text.split("The roles and their command lines", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| (\w+)[^|\n]*\|[^|\n]*\| `(celery -A crawlcluster [^`]+)` \|$", table,
                      re.MULTILINE)
    commands = {role: shlex.split(line) for role, line in rows}
    assert set(commands) == {"beat", "flower", "fetch", "parse", "store", "render"}, commands
    return commands


def readme_flower_with_port() -> list[str]:
    """The README's Flower command line that names a port."""
    lines = re.findall(r"`(celery -A crawlcluster flower --port[^`]*)`", README.read_text())
    assert lines, "README shows no `celery -A crawlcluster flower --port=...` command line"
    return shlex.split(lines[0])


def make_clean_venv(base: Path) -> Path:
    """A fresh venv under ``base`` holding `pip install <a copy of this checkout>` with no
    extras; its bin directory. tests/test_scaffold.py builds its own with this too."""
    source = base / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    venv = base / "venv"
    started = time.monotonic()
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, \
        f"python -m venv failed (on Debian: apt-get install python3-venv):\n{made.stderr}"
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
                          capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, env=pip_env())
    assert done.returncode == 0, \
        f"pip install of a clean checkout failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(f"clean venv built in {time.monotonic() - started:.1f}s")
    return venv / "bin"


def pip_env() -> dict[str, str]:
    """pip's own settings (index, cache) stay; nothing of this test's Python leaks in."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CRAWLCLUSTER_"))}


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding `pip install <checkout>` with no extras; its bin directory."""
    yield make_clean_venv(tmp_path_factory.mktemp("clean-install"))


class VenvProcesses(LocalCluster):
    """Processes started from the clean venv with only ``env`` (nothing of this test's
    environment), each in its own session, logging to a file, stopped by PID."""

    def __init__(self, bin_dir: Path, env: dict[str, str], work_dir: Path) -> None:
        super().__init__(env, log_dir=work_dir, inherit_env=False)
        self.bin_dir = bin_dir
        self.work_dir = work_dir

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` with its program taken from the venv: never this test's own Python."""
        program = self.bin_dir / argv[0]
        assert program.exists(), f"the clean venv has no {argv[0]} script"
        return [str(program), *argv[1:]]

    def run(self, argv: list[str], timeout: float,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv), cwd=self.work_dir, env=env or self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start_venv(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.spawn(name, self.argv(argv), env)

    def wait_for_log(self, name: str, needle: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        super().wait_for_log(name, needle, timeout)

    def wait_for_http(self, name: str, url: str, timeout: float = START_TIMEOUT_SECONDS) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=3) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
            except OSError:
                pass
            assert self.procs[name].poll() is None, \
                f"{name} exited with {self.procs[name].returncode}:\n{self.log(name)[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"{name} did not answer {url} within {timeout}s:\n{self.log(name)[-3000:]}")


def newcomer_env(bin_dir: Path, **settings: str) -> dict[str, str]:
    """A shell with only the venv's binaries and the system's: no PYTHONPATH, no test Python."""
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.update(settings)
    return env


@pytest.fixture
def venv_processes(clean_venv: Path, pg: str, redis_url: str, tmp_path: Path) -> Iterator[VenvProcesses]:
    env = newcomer_env(clean_venv, CRAWLCLUSTER_DATABASE_URL=pg, CRAWLCLUSTER_BROKER_URL=redis_url,
                       CRAWLCLUSTER_BROKER_KEY_PREFIX=os.environ["CRAWLCLUSTER_BROKER_KEY_PREFIX"])
    processes = VenvProcesses(clean_venv, env, tmp_path)
    yield processes
    processes.stop_all()


def test_the_venv_imports_crawlcluster_from_its_own_site_packages(clean_venv: Path, tmp_path: Path) -> None:
    env = newcomer_env(clean_venv)
    done = subprocess.run([str(clean_venv / "python"), "-c",
                           "import crawlcluster, kombu.transport.redis, celery; "
                           "print(crawlcluster.__file__)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(clean_venv.parent / "lib")), done.stdout
    # the installed package tells users' type checkers that its API is typed (PEP 561)
    assert (Path(done.stdout.strip()).parent / "py.typed").is_file(), "py.typed is missing from the wheel"
    # nothing a test or a browser needs came with the plain install
    for absent in ("pytest", "pyppeteer", "pyarrow"):
        probe = subprocess.run([str(clean_venv / "python"), "-c", f"import {absent}"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0, f"{absent} is installed without being asked for"
    # the parquet feed is an extra: without it, one line names it, before anything is fetched
    refused = subprocess.run([str(clean_venv / "crawlcluster"), "crawl", "http://127.0.0.1:9/", "-q",
                              "-o", "items.parquet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == ("Error: writing .parquet needs pyarrow: "
                                      "pip install 'crawlcluster[parquet]'"), refused.stderr


def test_a_clean_install_runs_the_readme_cluster_and_crawls_a_local_site(venv_processes: VenvProcesses,
                                                                        pg: str) -> None:
    roles = readme_role_commands()
    done = venv_processes.run(["crawlcluster", "initdb"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "schema up to date" in done.stderr

    for queue in ("fetch", "parse", "store"):
        venv_processes.start_venv(queue, roles[queue])
    venv_processes.start_venv("beat", roles["beat"])
    for queue in ("fetch", "parse", "store"):
        venv_processes.wait_for_log(queue, "ready.")
    venv_processes.wait_for_log("beat", "beat: Starting")

    with DemoSite(pages=30, traps=True).serve() as server:
        done = venv_processes.run(["crawlcluster", "submit", server.url + "/", "--project", "newcomer",
                                   "--wait"],
                                  timeout=CRAWL_TIMEOUT_SECONDS)
        assert done.returncode == 0, f"{done.stderr[-3000:]}\nbeat:\n{venv_processes.log('beat')[-2000:]}"
        assert "submitted project newcomer" in done.stderr
        tasks, items = load_rows(pg, "newcomer")
        assert_site_crawled(server, tasks, items)
    # the README's commands to watch and export, from the same venv
    done = venv_processes.run(["crawlcluster", "status"], timeout=120)
    assert done.returncode == 0 and "newcomer" in done.stdout + done.stderr, done.stderr
    done = venv_processes.run(["crawlcluster", "results", "newcomer", "--format", "jsonl", "-o",
                               "newcomer.jsonl", "-q"],
                              timeout=120)
    assert done.returncode == 0, done.stderr
    exported = (venv_processes.work_dir / "newcomer.jsonl").read_text().splitlines()
    assert len(exported) == len(items)
    for name in ("fetch", "parse", "store", "beat"):
        log = venv_processes.log(name)
        assert "ModuleNotFoundError" not in log and "Traceback" not in log, f"{name}:\n{log[-3000:]}"


def test_a_render_worker_without_the_render_extra_refuses_to_start_with_one_sentence(
        venv_processes: VenvProcesses) -> None:
    done = venv_processes.run(readme_role_commands()["render"], timeout=START_TIMEOUT_SECONDS)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert "pip install 'crawlcluster[render]'" in error and "-Q fetch,parse,store" in error, error


def test_flower_and_the_metrics_exporter_answer_http_from_a_clean_install(
        venv_processes: VenvProcesses) -> None:
    flower_port, metrics_port = free_port(), free_port()
    argv = [re.sub(r"^--port=\d+$", f"--port={flower_port}", arg) for arg in readme_flower_with_port()]
    assert f"--port={flower_port}" in argv, argv
    # Flower listens on every interface unless told; tests bind 127.0.0.1 only
    venv_processes.start_venv("flower", argv, env={**venv_processes.env, "FLOWER_ADDRESS": "127.0.0.1"})
    status, body = venv_processes.wait_for_http("flower", f"http://127.0.0.1:{flower_port}/healthcheck")
    assert (status, body) == (200, b"OK")
    status, body = venv_processes.wait_for_http("flower", f"http://127.0.0.1:{flower_port}/")
    assert status == 200 and b"Flower" in body

    venv_processes.start_venv("metrics", ["crawlcluster", "metrics", "--port", str(metrics_port)])
    status, body = venv_processes.wait_for_http("metrics", f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200 and b"crawlcluster_queue_messages" in body, body[:2000]


def test_the_embedded_crawl_runs_from_a_clean_install_with_nothing_configured(clean_venv: Path,
                                                                             tmp_path: Path) -> None:
    output = tmp_path / "items.jsonl"
    with DemoSite(pages=20, traps=True).serve() as server:
        done = subprocess.run([str(clean_venv / "crawlcluster"), "crawl", server.url + "/", "-o", str(output),
                               "-q"],
                              cwd=tmp_path, env=newcomer_env(clean_venv), capture_output=True, text=True,
                              timeout=CRAWL_TIMEOUT_SECONDS)
        assert done.returncode == 0, done.stderr[-3000:]
        hits = server.hits()
    items = [json.loads(line) for line in output.read_text().splitlines()]
    site = server.site
    assert sorted(target_of(item["url"]) for item in items) == \
        sorted(set(site.html_pages) | set(site.non_html))
    assert {t for t in hits} == site.reachable() | {"/robots.txt"}
    assert all(n == 1 for n in hits.values()), hits
