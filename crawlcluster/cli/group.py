"""The ``crawlcluster`` command group and what its commands share: the stderr console, -v
anywhere on the line, the version option, the parameter types for retry delays and
durations, and turning a :class:`CrawlClusterError` into a one-line error."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def fail(exc: Exception) -> NoReturn:
    """End the command with ``exc``'s sentence, not a traceback (the errors say what to do)."""
    raise click.ClickException(str(exc))


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crawlcluster")
    except PackageNotFoundError:  # run from a checkout that is not installed
        from crawlcluster import __version__

        return __version__


def _set_verbosity(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    """``-v`` before or after the subcommand: the most given anywhere wins."""
    root = ctx.find_root()
    total = max(value or 0, root.meta.get("crawlcluster.verbose", 0))
    root.meta["crawlcluster.verbose"] = total
    level = logging.WARNING - 10 * min(total, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    return total


def _verbose_option() -> click.Option:
    return click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True,
                        callback=_set_verbosity,
                        help="More logging (-v info, -vv debug); before or after the command.")


def _masked(url: str) -> str:
    """``url`` with its password shown as ``***``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: say nothing of its text
        return "(not a URL)"


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0].strip() if lines else type(cause).__name__


def unreachable_sentence(exc: BaseException) -> str | None:
    """One line for a database or broker that cannot be reached or a URL that cannot work,
    None for any other exception (a bug, which keeps its traceback)."""
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    from crawlcluster import settings

    try:
        current = settings.current()
        database_url, broker_url = current.database_url, current.broker_url
    except Exception:  # noqa: BLE001 - a malformed setting is reported on its own
        database_url = broker_url = ""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return (f"cannot reach the database at {_masked(database_url)} ({_first_line(exc)}); check "
                "CRAWLCLUSTER_DATABASE_URL and that Postgres is running")
    if isinstance(exc, ArgumentError):
        return f"CRAWLCLUSTER_DATABASE_URL is not a usable database URL: {_first_line(exc)}"
    # redis-py's error exists only where redis-py was imported (not in an embedded crawl,
    # whose every ending passes here: click's Exit is an exception too)
    redis_errors = sys.modules.get("redis.exceptions")
    broker_errors = (BrokerError,) if redis_errors is None else (BrokerError, redis_errors.ConnectionError)
    if isinstance(exc, broker_errors):
        return (f"cannot reach the broker at {_masked(broker_url)} ({_first_line(exc)}); check "
                "CRAWLCLUSTER_BROKER_URL and that Redis is running")
    return None


class _Commands(click.Group):
    """The command group; every command also takes -v/-vv after its name. A database or
    broker that cannot be reached, or a bad setting, ends any command with one line on
    stderr and exit status 1, not a traceback (-vv logs the traceback too)."""

    def invoke(self, ctx: click.Context) -> Any:
        from crawlcluster.errors import CrawlClusterError

        try:
            return super().invoke(ctx)
        except CrawlClusterError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            sentence = unreachable_sentence(exc)
            if sentence is None:
                raise
            logging.getLogger("crawlcluster.cli").debug("the command failed", exc_info=exc)
            raise click.ClickException(sentence) from None

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(isinstance(p, click.Option) and "--verbose" in p.opts for p in cmd.params):
            cmd.params.append(_verbose_option())
        super().add_command(cmd, name)


@click.group(cls=_Commands)
@click.version_option(_package_version(), "--version", prog_name="crawlcluster",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_set_verbosity,
              help="More logging (-v info, -vv debug).")
def main() -> None:
    """crawlcluster: a distributed web crawler on Celery, or one command on one machine."""


class RetryDelays(click.ParamType):
    """``SECONDS[,SECONDS...]``: the delay before each retry; the last one repeats."""

    name = "seconds[,seconds...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[float]:
        if isinstance(value, list):
            return value
        from crawlcluster.settings import seconds_list

        try:
            return seconds_list(str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


def retry_settings(retries: int | None, retry_delay: list[float] | None) -> dict[str, Any]:
    """The project settings ``--retries`` and ``--retry-delay`` give (none when not given)."""
    values: dict[str, Any] = {}
    if retries is not None:
        values["retries"] = retries
    if retry_delay is not None:
        values["retry_delays"] = retry_delay
    return values


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """``90``, ``45s``, ``30m``, ``1h`` or ``2d``, as seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        unit = DURATION_UNITS.get(text[-1:], None)
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            self.fail(f"{value!r} is not a duration; use seconds or a number with s, m, h or d (e.g. 1h)",
                      param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be longer than zero", param, ctx)
        return seconds


class BadOutput(click.ClickException):
    """An output file that cannot be written (unknown format, missing directory, a file
    that cannot be appended to): one line, the usage error's exit code."""

    exit_code = 2


def output_and_mode(output: str | None, overwrite: str | None) -> tuple[str | None, bool]:
    """The output file of ``-o FILE`` (append) or ``-O FILE`` (overwrite), as Scrapy names
    them, and whether to append; both at once is a usage error."""
    if output and overwrite:
        raise click.UsageError("give -o FILE (append) or -O FILE (overwrite), not both")
    return (output or overwrite), bool(output)
