"""Starting one headless Chromium process for the render engine, without pyppeteer's launcher.

Chromium is started here so that it holds nothing it does not need and can be killed
whole. It runs in a process group of its own (the whole tree can be killed at once, even
helpers already re-parented) and dies with the thread that started it
(``PR_SET_PDEATHSIG``, so a worker killed with SIGKILL takes its browser along). Its
environment is built from nothing (:func:`browser_environment`: no database or broker
URL, no password, no ``CRAWLCLUSTER_*``), apart from ``CRAWLBROWSER_OWNER=<worker pid>``,
which every helper inherits so that tests and operators can find them. It speaks DevTools
over a pipe (fds 3 and 4, ``--remote-debugging-pipe``), so no local process can reach it
through a port; every request goes through the worker's guard proxy
(``--proxy-server``, loopback included). It runs as an unprivileged user
(``CRAWLCLUSTER_BROWSER_USER``; ``nobody`` when the worker is root) with its sandbox on,
unless ``CRAWLCLUSTER_BROWSER_SANDBOX=off`` says otherwise; only the file descriptors 0 to
4 reach it.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crawlcluster.errors import FetchError

logger = logging.getLogger(__name__)

BROWSER_OWNER_ENV = "CRAWLBROWSER_OWNER"  # not CRAWLCLUSTER_*: nothing of that name reaches Chromium
# the background-networking flags keep it from calling home; the proxy flags send every request,
# loopback too, through the guard proxy; WebRTC may not send UDP around it, nor DNS prefetch resolve;
# a kept page (page.PagePool) keeps no document it navigated away from (the back-forward cache)
CHROMIUM_FLAGS = (
    "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
    "--proxy-bypass-list=<-loopback>", "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--dns-prefetch-disable", "--disable-features=NetworkPrediction,DnsOverHttps,BackForwardCache",
)
# variables copied from the worker's environment, when set: what a browser needs to find its
# programs, speak the right language and time zone, and find fonts
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "FONTCONFIG_FILE", "FONTCONFIG_PATH")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
PR_SET_PDEATHSIG = 1
SANDBOX_SIGNS = ("No usable sandbox", "Failed to move to new namespace", "zygote_host_impl",
                 "Running as root without --no-sandbox is not supported")


@dataclass(frozen=True)
class BrowserUser:
    """The account Chromium runs as (``None`` for uid and gid: the worker's own)."""

    name: str
    uid: int | None = None
    gid: int | None = None


def browser_user(setting: str) -> BrowserUser:
    """The account named by ``CRAWLCLUSTER_BROWSER_USER``; empty means ``nobody`` for a worker
    running as root (Chromium refuses its sandbox as root) and the worker's own account otherwise."""
    me = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() != 0 else "root"
    name = setting.strip() or ("nobody" if os.geteuid() == 0 else me)
    if name == me:
        return BrowserUser(name)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise FetchError("", "browser", f"CRAWLCLUSTER_BROWSER_USER={name!r}: no such user") from None
    if os.geteuid() != 0:
        raise FetchError("", "browser", f"CRAWLCLUSTER_BROWSER_USER={name!r}: only a worker running as root "
                                        f"can start Chromium as another user (this one runs as {me})")
    return BrowserUser(name, entry.pw_uid, entry.pw_gid)


def browser_environment(home: str) -> dict[str, str]:
    """Chromium's environment, built from nothing: PATH, HOME (its private directory),
    language, time zone and fontconfig's variables if set, and the owner marker."""
    env = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(HOME=home, XDG_CONFIG_HOME=f"{home}/.config", XDG_CACHE_HOME=f"{home}/.cache",
               TMPDIR=home)
    env[BROWSER_OWNER_ENV] = str(os.getpid())
    return env


def sandbox_facts() -> str:
    """What this kernel says about user namespaces (what Chromium's sandbox needs)."""
    facts = []
    for path in ("/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/user/max_user_namespaces",
                 "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"):
        try:
            facts.append(f"{Path(path).name}={Path(path).read_text().strip()}")
        except OSError:
            pass
    return ", ".join(facts) or "no user namespace settings readable"


def sandbox_failure(chromium_path: str, user: BrowserUser) -> str:
    """The one line a render worker says when Chromium's sandbox cannot start."""
    return (f"Chromium ({chromium_path}, as user {user.name}) cannot start its sandbox here "
            f"({sandbox_facts()}): "
            "it needs an unprivileged user (CRAWLCLUSTER_BROWSER_USER) and user namespaces, which Docker's "
            "default seccomp profile refuses (run the render container with --security-opt "
            "seccomp=unconfined, or a profile that allows clone/unshare with CLONE_NEWUSER; Kubernetes: "
            "seccompProfile Unconfined), or set CRAWLCLUSTER_BROWSER_SANDBOX=off to render without the "
            "sandbox (unsafe: a page that exploits the browser then runs as the render worker's user)")


@dataclass
class ChromiumProcess:
    """A started Chromium: its process, profile directory and the parent's ends of its pipes."""

    proc: subprocess.Popen
    user_data_dir: str
    to_browser: int  # we write DevTools commands here (Chromium's fd 3)
    from_browser: int  # and read its answers and events here (Chromium's fd 4)
    user: BrowserUser

    def last_words(self) -> str:
        return (Path(self.user_data_dir) / "chromium.log").read_text(errors="replace")[-1500:]


def _child_setup(read_end: int, write_end: int, user: BrowserUser) -> None:
    """Runs in the child between fork and exec: the DevTools pipes on fds 3 and 4, every
    other descriptor closed at exec, the browser's account, and death with the parent."""
    command = fcntl.fcntl(read_end, fcntl.F_DUPFD, 5)
    answers = fcntl.fcntl(write_end, fcntl.F_DUPFD, 5)
    os.dup2(command, 3)
    os.dup2(answers, 4)
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 4:
            try:
                os.set_inheritable(int(name), False)
            except OSError:
                pass  # the directory listing's own descriptor, gone already
    if user.uid is not None and user.gid is not None:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)
    # after the change of user, which clears it
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PROFILE_PREFIX = "crawlcluster-chromium-"  # then the worker's pid: crawlcluster-chromium-1234-xxxx


def sweep_stale_profiles(directory: str | None = None) -> int:
    """Remove the profile directories of render workers that are gone (killed with SIGKILL, a
    worker leaves its browser's profile behind: Chromium dies with it, the directory stays).
    A directory is stale when the process its name carries no longer runs; returns how many
    were removed."""
    removed = 0
    base = Path(directory or tempfile.gettempdir())
    for path in base.glob(f"{PROFILE_PREFIX}*-*"):
        owner = path.name[len(PROFILE_PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        try:
            os.kill(int(owner), 0)
            continue  # its worker still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # a process of another user holds that pid
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    if removed:
        logger.info("removed %d browser profile directories of render workers that are gone", removed)
    return removed


def start_chromium(chromium_path: str, *, proxy_url: str, user: BrowserUser,
                   sandbox: bool) -> ChromiumProcess:
    """Start Chromium with a fresh profile directory (also its HOME, owned by ``user``); the
    caller removes the directory when the browser is gone."""
    if not os.access(chromium_path, os.X_OK):
        raise FetchError("", "browser", f"Chromium at {chromium_path} is not an executable; "
                         "install chromium or set CRAWLCLUSTER_CHROMIUM_PATH")
    sweep_stale_profiles()
    user_data_dir = tempfile.mkdtemp(prefix=f"{PROFILE_PREFIX}{os.getpid()}-")
    if user.uid is not None:
        os.chown(user_data_dir, user.uid, user.gid or 0)
    flags = [*CHROMIUM_FLAGS, f"--proxy-server={proxy_url}", f"--user-data-dir={user_data_dir}"]
    if not sandbox:
        flags.append("--no-sandbox")
    command_read, to_browser = os.pipe()
    from_browser, answer_write = os.pipe()
    try:
        with open(Path(user_data_dir) / "chromium.log", "wb") as log:
            proc = subprocess.Popen(
                [chromium_path, *flags, "about:blank"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=browser_environment(user_data_dir), cwd=user_data_dir, start_new_session=True,
                close_fds=False, preexec_fn=lambda: _child_setup(command_read, answer_write, user))
    except BaseException:
        for fd in (to_browser, from_browser):
            os.close(fd)
        raise
    finally:
        os.close(command_read)
        os.close(answer_write)
    return ChromiumProcess(proc, user_data_dir, to_browser, from_browser, user)


def startup_failure(chromium: ChromiumProcess, chromium_path: str, sandbox: bool, detail: str) -> FetchError:
    """A readable error for a Chromium that did not start: the sandbox line when the sandbox is
    why, else Chromium's own last words."""
    words = chromium.last_words()
    if sandbox and any(sign in words for sign in SANDBOX_SIGNS):
        return FetchError("", "browser", sandbox_failure(chromium_path, chromium.user))
    return FetchError("", "browser", f"Chromium ({chromium_path}) {detail}:\n{words}")
