"""The command table a user reads: `crawlcluster --help` lists the same commands, in the
same order and with the same one-line help, whether started as the console script's
target (``crawlcluster.cli:main``) or as ``python -m crawlcluster.cli``; every command
takes -v after its name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (command, the start of its line in `--help`), as the command table has always read
COMMANDS = (
    ("cancel", "Cancel PROJECT: its pending URLs become cancelled..."),
    ("crawl", "Crawl URLS on this machine alone (no Redis, no Postgres)..."),
    ("delete", "Cancel PROJECT and remove its rows and results after a..."),
    ("demo", "Serve a small bundled site on 127.0.0.1 and crawl it,..."),
    ("failures", "List PROJECT's failed URLs with their reasons, counts by..."),
    ("genspider", "Add a spider module NAME for DOMAIN to the project in the..."),
    ("initdb", "Create or upgrade the database schema..."),
    ("metrics", "Serve Prometheus metrics of the whole cluster (queues,..."),
    ("parse", "Try a spider callback on URL: fetch it as a worker does,..."),
    ("pause", "Stop dispatching PROJECT's URLs (queued ones finish)."),
    ("render-stats", "Per render worker process: pages, recycles, crashes, hung..."),
    ("results", "Export PROJECT's items, streamed from the database with a..."),
    ("resume", "Dispatch PROJECT's URLs again, after a pause or a cancel..."),
    ("retry", "Fetch PROJECT's failed URLs again: they become pending..."),
    ("schedule", "Re-seed PROJECT's start URLs on a schedule (beat sends..."),
    ("screenshots", "Export PROJECT's screenshots (render option..."),
    ("set", "Change PROJECT's settings while it runs, e.g."),
    ("shell", "Open a Python prompt with URL's response, its request and..."),
    ("startproject", "Write a runnable project NAME (spider, pipeline,..."),
    ("status", "Rows per state, pace, ETA and cost for PROJECT (with its..."),
    ("submit", "Submit URLs, or one spider import path..."),
    ("web", "Serve the crawl console: every project's progress, hosts,..."),
)


def _help(*argv: str) -> str:
    env = dict(os.environ, COLUMNS="80")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _command_table(help_text: str) -> list[tuple[str, str]]:
    table = help_text.split("\nCommands:\n", 1)[1]
    return [(m[1], m[2]) for m in re.finditer(r"^  (\S+)\s+(.+)$", table, re.MULTILINE)]


def test_help_lists_the_same_commands_in_the_same_order_with_the_same_help() -> None:
    by_module = _help("-m", "crawlcluster.cli")
    assert _command_table(by_module) == list(COMMANDS)
    assert "crawlcluster: a distributed web crawler on Celery, or one command on one machine." in \
        " ".join(by_module.split())


def test_the_console_script_target_is_the_same_command() -> None:
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["crawlcluster"]
    module, _, name = target.partition(":")
    script = f"import sys; from {module} import {name}; sys.argv[0] = 'crawlcluster'; {name}()"
    by_script = _help("-c", script)
    assert _command_table(by_script) == list(COMMANDS)
    assert by_script.startswith("Usage: crawlcluster [OPTIONS] COMMAND [ARGS]...")
    assert by_script.replace("Usage: crawlcluster", "") == _help("-m", "crawlcluster.cli").replace(
        "Usage: python -m crawlcluster.cli", "")
    assert sorted(getattr(import_module(module), name).commands) == [command for command, _ in COMMANDS]


def test_every_command_takes_verbose_after_its_name() -> None:
    from crawlcluster.cli import main

    for name, command in main.commands.items():
        assert any("--verbose" in param.opts for param in command.params), f"{name} takes no -v"
