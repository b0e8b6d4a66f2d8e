"""Flower closed by default: ``celery -A crawlcluster flower`` listens on 127.0.0.1 unless an
address is configured, and refuses to listen elsewhere without a password.

Flower itself listens on every interface with no password. Its options are tornado options,
read in this order (each overrides the last): ``FLOWER_*`` variables, then its config file
(``--conf``, default flowerconfig.py), then the command line. ``-A crawlcluster`` imports
the app before Flower reads any of them, so :func:`prepare_flower` can (1) put
``CRAWLCLUSTER_FLOWER_ADDRESS`` (default 127.0.0.1) in ``FLOWER_ADDRESS`` when that is unset,
so ``FLOWER_ADDRESS``, the config file and ``--address`` still win, and (2) add a tornado
parse callback that looks at the options once they are final and stops the process, with
one line on stderr and exit status 2, when the address is not loopback and neither basic
auth nor Flower's OAuth (``--auth``) is configured.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from crawlcluster.settings import Settings

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_flower_command(argv: list[str]) -> bool:
    """Whether this process is ``celery ... flower`` (the app is imported by every command)."""
    return "flower" in argv[1:]


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for '' (every interface) and others."""
    host = address.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(address: str, port: Any, has_auth: bool, unix_socket: str = "") -> str | None:
    """The one-line reason to refuse these final options, None when they are safe."""
    if unix_socket or has_auth or is_loopback(address):
        return None
    where = address or "every interface (0.0.0.0)"
    return (f"crawlcluster: refusing to start Flower on {where} port {port} without a password: anyone who "
            "reaches it could see every task and shut the workers down. Set CRAWLCLUSTER_FLOWER_AUTH="
            "user:password (or --basic-auth / FLOWER_BASIC_AUTH, or Flower's --auth OAuth), or listen on "
            "127.0.0.1 (CRAWLCLUSTER_FLOWER_ADDRESS, FLOWER_ADDRESS or --address)")


def prepare_flower(s: Settings) -> None:
    """Default Flower's address to ``s.flower_address`` and refuse an open non-loopback bind
    (see the module docstring). Call it before Flower reads its options."""
    if not os.environ.get("FLOWER_ADDRESS"):
        os.environ["FLOWER_ADDRESS"] = s.flower_address
    from tornado.options import options

    calls = []

    def check() -> None:
        calls.append(1)
        # Flower parses its command line twice when a config file exists (before reading
        # it, then after): only the last parse holds the final options
        conf = getattr(options, "conf", "")
        if conf and os.path.exists(os.path.abspath(conf)) and len(calls) == 1:
            return
        reason = refusal(options.address, options.port, bool(options.basic_auth) or bool(options.auth),
                         getattr(options, "unix_socket", ""))
        if reason:
            print(reason, file=sys.stderr)  # noqa: T201 - the one line a person reads, then exit
            raise SystemExit(2)

    options.add_parse_callback(check)
