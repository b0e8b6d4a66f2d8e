"""The project scaffold: ``crawlcluster startproject NAME [DIR]`` writes a runnable package of
spiders, and ``crawlcluster genspider NAME DOMAIN`` adds a spider to it.

The templates ship inside the package (``crawlcluster/scaffold_templates/``, package data,
``.tmpl`` files so no tool mistakes them for code) and are rendered with Jinja2. What a
project holds, and why, is in the README's "A project of your own"; each file's head says
how it is used. Nothing is ever overwritten: a file that exists stops the command before
anything is written.
"""

from __future__ import annotations

import keyword
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from crawlcluster.errors import ConfigurationError

__all__ = ["ScaffoldError", "check_domain", "check_name", "find_project", "gen_spider", "start_project"]

TEMPLATES = Path(__file__).resolve().parent / "scaffold_templates"
# template (under project/) -> path written; PACKAGE stands for the project's package
PROJECT_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "Dockerfile.tmpl": "Dockerfile",
    "docker-compose.yml.tmpl": "docker-compose.yml",
    "gitignore.tmpl": ".gitignore",
    "dockerignore.tmpl": ".dockerignore",
    "package/__init__.py.tmpl": "PACKAGE/__init__.py",
    "package/settings.py.tmpl": "PACKAGE/settings.py",
    "package/pipelines.py.tmpl": "PACKAGE/pipelines.py",
    "package/spiders/__init__.py.tmpl": "PACKAGE/spiders/__init__.py",
    "package/spiders/example.py.tmpl": "PACKAGE/spiders/example.py",
    "tests/test_example.py.tmpl": "tests/test_example.py",
    "tests/pages/example.html.tmpl": "tests/pages/example.html",
}
# names a project's package may not take: they would hide a module its workers import
RESERVED = {"crawlcluster", "workers", "tasks", "celeryconfig", "tests", "test", "celery", "kombu"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class ScaffoldError(ConfigurationError):
    """A name, domain or place the scaffold refuses, with the reason in a sentence."""


def check_name(name: str, what: str = "project") -> str:
    """``name`` when it can name a Python package (or module) and a Compose project: lower
    case letters, digits and ``_``, starting with a letter, not a Python keyword; a project's
    package may not be a module of the standard library or one crawlcluster's workers import
    (its import would find theirs). A spider's module lives inside the package: no such risk."""
    if not _NAME.match(name):
        raise ScaffoldError(f"{what} name {name!r} is not usable: use lower case letters, digits and _, "
                            "starting with a letter (it names a Python package and a Docker Compose project)")
    if keyword.iskeyword(name):
        raise ScaffoldError(f"{what} name {name!r} is a Python keyword; choose another")
    if what == "project" and (name in RESERVED or name in sys.stdlib_module_names):
        raise ScaffoldError(f"{what} name {name!r} is the name of a module crawlcluster or Python already "
                            "has; choose another, so imports find yours")
    return name


def check_domain(domain: str) -> str:
    """The host of ``domain`` (a host name, ``host:port``, or a URL, whose host is kept), lower
    case; a ScaffoldError for anything that cannot be a host."""
    text = domain.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    host, _, port = text.partition(":")
    labels = host.rstrip(".").split(".")
    if not host or not all(_HOST_LABEL.match(label) for label in labels) or (port and not port.isdigit()):
        raise ScaffoldError(f"domain {domain!r} is not a host name (e.g. example.com or example.com:8080)")
    return f"{'.'.join(labels)}{':' + port if port else ''}"


def _render(template: str, values: dict[str, str]) -> str:
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                     autoescape=False)
    return environment.from_string((TEMPLATES / template).read_text(encoding="utf-8")).render(**values)


def _write_all(files: dict[Path, str]) -> list[Path]:
    existing = [path for path in files if path.exists()]
    if existing:
        raise ScaffoldError(f"{existing[0]} exists already; nothing was written (the scaffold never "
                            "overwrites a file)")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def start_project(name: str, directory: str | Path | None = None, domain: str = "example.com") -> list[Path]:
    """Write the project ``name`` into ``directory`` (default: ``./name``); the files written.

    Refused, before anything is written, for a bad name or domain, or when any of the files
    exists already (a directory that exists is fine otherwise, as ``scrapy startproject``)."""
    from crawlcluster import __version__

    check_name(name)
    host = check_domain(domain)
    root = Path(directory) if directory is not None else Path(name)
    values = {"name": name, "domain": host, "version": __version__}
    files = {root / target.replace("PACKAGE", name): _render(f"project/{template}", values)
             for template, target in PROJECT_FILES.items()}
    return _write_all(files)


@dataclass(frozen=True)
class Project:
    """A project made by :func:`start_project`: its folder and its package's name."""

    root: Path
    package: str


def find_project(start: str | Path = ".") -> Project:
    """The project ``start`` is in: the nearest ``pyproject.toml`` at or above it with a
    ``[tool.crawlcluster] package`` entry; a ScaffoldError saying so when there is none."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            continue
        try:
            package = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}) \
                .get("crawlcluster", {}).get("package")
        except tomllib.TOMLDecodeError as exc:
            raise ScaffoldError(f"{pyproject} is not valid TOML: {exc}") from None
        if package:
            return Project(folder, check_name(str(package)))
    raise ScaffoldError(f"{here} is not inside a crawlcluster project (no pyproject.toml with "
                        "[tool.crawlcluster] package = ...); make one with crawlcluster startproject NAME")


def class_name(spider: str) -> str:
    """``books_top`` -> ``BooksTopSpider``."""
    return "".join(part.capitalize() for part in spider.split("_") if part) + "Spider"


def gen_spider(name: str, domain: str, start: str | Path = ".") -> Path:
    """Add the spider module ``name`` for ``domain`` to the project ``start`` is in; its path.
    Refused outside a project, for a bad name or domain, and when the module exists."""
    check_name(name, "spider")
    host = check_domain(domain)
    project = find_project(start)
    spiders = project.root / project.package / "spiders"
    if not (spiders / "__init__.py").is_file():
        raise ScaffoldError(f"{spiders} is not a package (no __init__.py); the project's spiders live there")
    values = {"spider": name, "domain": host, "package": project.package, "cls": class_name(name)}
    (path,) = _write_all({spiders / f"{name}.py": _render("spider.py.tmpl", values)})
    return path
