"""``crawlcluster parse`` and ``crawlcluster shell``: try a spider callback on one URL, or look
at its Response at a Python prompt, with the workers' own fetcher and parse engine
(:mod:`workers.trial`, run by name: :func:`crawlcluster.stages.trial_engine`); nothing is
stored and no database or broker is needed."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from crawlcluster.cli.group import console as err_console
from crawlcluster.cli.group import fail
from crawlcluster.errors import CrawlClusterError
from crawlcluster.stages import trial_engine

out = Console(soft_wrap=True)


class JsonValue(click.ParamType):
    """A JSON document given on the command line (``--data '{"page": 2}'``)."""

    name = "json"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"{value!r} is not JSON: {exc}", param, ctx)


def _spider_options(command: Any) -> Any:
    command = click.option("--spider", "spider_path", metavar="PKG.MOD:SPIDER",
                           help="The spider whose callback runs (default: the built-in link spider); "
                                "the current directory is importable.")(command)
    command = click.option(
        "-a", "spider_args", multiple=True, metavar="NAME=VALUE",
        help="A spider argument (an attribute of the spider instance); repeatable.")(command)
    return command


def _spider_kwargs(pairs: tuple[str, ...]) -> dict[str, Any]:
    kwargs = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.UsageError(f"-a takes NAME=VALUE, got {pair!r}")
        kwargs[name] = value
    return kwargs


def _print_result(result: Any) -> None:
    """One try, readably: the response line, the items, the follow-ups, the log lines."""
    where = f" (redirected from {result.redirects[0]})" if result.redirects else ""
    via = "rendered" if result.rendered else "fetched"
    head = f"[bold]depth {result.depth}[/] {result.callback}  {result.final_url or result.url}{where}"
    out.print(head, highlight=False)
    if result.fetch_error:
        out.print(f"  not parsed: {result.fetch_error}", markup=False, highlight=False)
        return
    ctype = result.headers.get("content-type", "-")
    out.print(f"  {via}: HTTP {result.status}, {ctype}, {result.body_bytes} bytes, "
              f"{result.elapsed_seconds:.2f}s", markup=False, highlight=False)
    for line in result.logs:
        out.print(f"  log: {line}", markup=False, highlight=False)
    if result.error:
        out.print(f"  [red]callback raised[/]: {result.error}", highlight=False)
        return
    out.print(f"  [bold]items[/] ({len(result.items)})", highlight=False)
    for item in result.items:
        out.print_json(data=item, default=str)
    out.print(f"  [bold]requests[/] ({len(result.requests)})", highlight=False)
    for request in result.requests:
        extra = "".join(f"  {key}={json.dumps(request[key], default=str)}"
                        for key in ("data", "render", "method") if request[key] not in (None, False, "GET"))
        followed = "" if request["followed"] else "  (off-site or invalid: a crawl would not add it)"
        out.print(f"  -> {request['url']}  {request['callback']}{extra}{followed}", markup=False,
                  highlight=False)


@click.command()
@click.argument("url")
@_spider_options
@click.option("-c", "--callback", help="The spider method to run (default: parse).")
@click.option("--data", type=JsonValue(), help="JSON the callback receives as response.data.")
@click.option("--render", is_flag=True, help="Load the page in headless Chromium (the render tier's engine).")
@click.option("--depth", type=click.IntRange(min=0), default=0, show_default=True,
              help="Follow the follow-up requests this many levels deep, each with its own callback "
                   "(at most CRAWLCLUSTER_TRIAL_MAX_REQUESTS in all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of the tries, nothing else.")
def parse(url: str, spider_path: str | None, spider_args: tuple[str, ...], callback: str | None, data: Any,
          render: bool, depth: int, as_json: bool) -> None:
    """Try a spider callback on URL: fetch it as a worker does, run the callback, print the
    items and follow-up requests. Nothing is stored; exit status 1 when it raises."""
    engine = trial_engine()
    Engines, follow, load_trial_spider, try_url = (engine.Engines, engine.follow, engine.load_trial_spider,
                                                   engine.try_url)

    try:
        spider = load_trial_spider(spider_path, allow_named=True, kwargs=_spider_kwargs(spider_args), url=url)
    except CrawlClusterError as exc:
        fail(exc)
    engines = Engines()
    try:
        first = try_url(spider, url, callback=callback, data=data, render=True if render else None,
                        engines=engines)
        results = [first]
        if not as_json:
            _print_result(first)
        if depth and first.ok:
            for result in follow(spider, first, depth, engines=engines):
                results.append(result)
                if not as_json:
                    _print_result(result)
    finally:
        engines.close()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], default=str, ensure_ascii=False))
    failed = [r for r in results if not r.ok]
    for result in failed:
        if result.traceback:
            err_console.print(f"{result.callback} raised on {result.url}:", markup=False, highlight=False)
            err_console.print(result.traceback.rstrip(), markup=False, highlight=False)
        else:
            err_console.print(f"{result.url}: {result.fetch_error}", markup=False, highlight=False)
    click.get_current_context().exit(1 if failed else 0)


SHELL_BANNER = """crawlcluster shell: {status}
  response   the Response a callback would get (css(), css_first(), links(), text, ...)
  request    the Request it came from
  spider     {spider}
  fetch(url) fetch another page: rebinds response and request
  run(name)  run a spider callback on response: a TrialResult (items, requests, logs, error)
"""


@click.command()
@click.argument("url")
@_spider_options
@click.option("--render", is_flag=True, help="Load the page in headless Chromium.")
def shell(url: str, spider_path: str | None, spider_args: tuple[str, ...], render: bool) -> None:
    """Open a Python prompt with URL's response, its request and the spider bound, as
    scrapy shell does (IPython when installed and on a terminal)."""
    import sys

    from crawlcluster.http import Request
    engine = trial_engine()
    Engines, load_trial_spider, try_url = engine.Engines, engine.load_trial_spider, engine.try_url

    try:
        spider = load_trial_spider(spider_path, allow_named=True, kwargs=_spider_kwargs(spider_args), url=url)
    except CrawlClusterError as exc:
        fail(exc)
    engines = Engines()
    namespace: dict[str, Any] = {"spider": spider}

    def fetch(target: str | Request, render_page: bool = render) -> Any:
        request = target if isinstance(target, Request) else Request(target)
        result = try_url(spider, request, render=True if render_page else None, engines=engines, run=False)
        namespace.update(request=request, response=result.response, result=result)
        return result.response if result.response is not None else result.fetch_error

    def run(callback: str = "parse") -> Any:
        return engine.run_on(spider, callback, namespace["response"])

    namespace.update(fetch=fetch, run=run)
    try:
        fetch(url)
        first = namespace["result"]
        status = (f"{first.final_url or first.url} answered {first.status}" if first.response is not None
                  else f"{first.url} could not be fetched: {first.fetch_error}")
        banner = SHELL_BANNER.format(status=status, spider=type(spider).__name__)
        if sys.stdin.isatty():
            import importlib.util

            if importlib.util.find_spec("IPython") is not None:
                from IPython import start_ipython

                print(banner)
                start_ipython(argv=["--no-banner"], user_ns=namespace)
                return
        import code

        code.interact(banner=banner, local=namespace, exitmsg="")
    finally:
        engines.close()
