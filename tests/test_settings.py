"""Settings have one home: every option is documented in the README, read from its variable
once per process, and typed (the Settings dataclass and the OPTIONS table are one declaration)."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError
from crawlcluster.settings import OPTIONS, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_settings_table():
    text = README.read_text(encoding="utf-8")
    missing = [opt.env_name(name) for name, opt in settings.OPTIONS.items()
               if f"`{opt.env_name(name)}`" not in text]
    assert not missing, f"undocumented settings: {missing}"


def test_a_setting_comes_from_its_environment_variable(monkeypatch):
    monkeypatch.setenv("CRAWLCLUSTER_PER_HOST_CONCURRENCY", "3")
    monkeypatch.setenv("CRAWLCLUSTER_RETRY_DELAYS", "1, 2.5,10")
    monkeypatch.setenv("CRAWLCLUSTER_OBEY_ROBOTS", "false")
    loaded = Settings.load()
    assert loaded.per_host_concurrency == 3
    assert loaded.retry_delays == [1.0, 2.5, 10.0]
    assert loaded.obey_robots is False


@pytest.mark.parametrize("name, value, needle", [
    ("CRAWLCLUSTER_FETCH_BATCH_SIZE", "0", "at least 1"),
    ("CRAWLCLUSTER_RETRY_DELAYS", "soon", "comma-separated"),
    ("CRAWLCLUSTER_OBEY_ROBOTS", "perhaps", "boolean"),
])
def test_a_bad_value_is_a_configuration_error_naming_the_variable(monkeypatch, name, value, needle):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as error:
        Settings.load()
    assert name in str(error.value) and needle in str(error.value)


def _runtime_types(annotation: typing.Any) -> tuple[type, ...]:
    """``int | None`` -> (int, NoneType); ``list[float]`` -> (list,)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for arg in typing.get_args(annotation) for t in _runtime_types(arg))
    origin = typing.get_origin(annotation)
    return (origin,) if origin is not None else (annotation,)


def _as_environment_text(value: typing.Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_the_settings_fields_and_the_options_table_agree_on_names_types_and_defaults():
    hints = typing.get_type_hints(Settings)
    declared = {f.name: f for f in dataclasses.fields(Settings)}
    assert list(declared) == list(OPTIONS)
    defaults = Settings()
    for name, option in OPTIONS.items():
        kinds = _runtime_types(hints[name])
        assert declared[name].default == option.default == getattr(defaults, name), name
        assert isinstance(option.default, kinds), f"{name}: default {option.default!r} is not {hints[name]}"
        # what the environment gives is of the attribute's type (bool is not taken for int)
        sample = option.default if option.default is not None else {"retry_delays": [1.5, 30.0]}.get(name, 2)
        parsed = option.type(_as_environment_text(sample))
        assert isinstance(parsed, kinds) and (isinstance(parsed, bool) == (bool in kinds)), (name, parsed)
        assert parsed == sample, name


def test_the_process_reads_its_settings_once_until_configure_or_reset(monkeypatch):
    monkeypatch.setenv("CRAWLCLUSTER_CLAIM_BATCH_SIZE", "7")
    first = settings.current()
    assert first.claim_batch_size == 7 and settings.current() is first
    monkeypatch.setenv("CRAWLCLUSTER_CLAIM_BATCH_SIZE", "8")
    assert settings.current() is first  # read once: a later change of the environment is not seen
    settings.configure(claim_batch_size="9", database_url="sqlite:///x.db")
    assert (settings.current().claim_batch_size, settings.current().database_url) == (9, "sqlite:///x.db")
    settings.reset()
    assert settings.current().claim_batch_size == 8 and settings.current().database_url != "sqlite:///x.db"
    assert settings.get("claim_batch_size") == 8


def test_configure_refuses_an_unknown_name_and_a_value_out_of_bounds():
    with pytest.raises(ConfigurationError, match="unknown crawlcluster setting 'claim_batch'"):
        settings.configure(claim_batch=3)
    with pytest.raises(ConfigurationError, match="unknown crawlcluster setting 'user_agnet'"):
        settings.get("user_agnet")
    settings.configure(fetch_batch_size=0)
    with pytest.raises(ConfigurationError, match="fetch_batch_size=0 is invalid: it must be at least 1"):
        settings.current()


def test_load_takes_an_environment_and_overrides_of_its_own():
    loaded = Settings.load({"CRAWLCLUSTER_USER_AGENT": "bot/2", "CRAWLCLUSTER_TICK_SECONDS": ""},
                           {"max_redirects": 3})
    assert (loaded.user_agent, loaded.tick_seconds, loaded.max_redirects) == ("bot/2", 1.0, 3)
    assert dataclasses.replace(loaded, tick_seconds=0.5).tick_seconds == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.user_agent = "other"  # type: ignore[misc]


def test_components_take_the_settings_they_are_handed_and_plain_values_in_init(test_app):
    from crawlcluster.app import role_defaults
    from crawlcluster.dispatch.dispatcher import Dispatcher
    from crawlcluster.metrics import ClusterCollector
    from workers.browser.renderer import Renderer
    from workers.fetcher import Fetcher

    own = dataclasses.replace(Settings(), user_agent="handed/1", fetch_concurrency=40, fetch_batch_size=4,
                              store_concurrency=3, per_host_concurrency=2, obey_robots=False,
                              render_pages_in_flight=2, chromium_path="/nowhere/chromium",
                              broker_key_prefix="p:", tick_seconds=0.25)
    fetcher = Fetcher.from_settings(own)
    assert (fetcher.user_agent, fetcher.concurrency) == ("handed/1", 40)
    renderer = Renderer.from_settings(own)  # the browser starts on first use only
    assert (renderer.chromium_path, renderer.pages_in_flight, renderer.user_agent) == \
        ("/nowhere/chromium", 2, "handed/1")
    dispatcher = Dispatcher.from_settings(test_app, own)
    assert (dispatcher.per_host_concurrency, dispatcher.obey_robots) == (2, False)
    assert dispatcher.tick_seconds == 0.25
    dispatcher.close()
    assert ClusterCollector.from_settings(own).key_prefix == "p:"
    assert role_defaults(["fetch"], own) == ("threads", 12)  # 40 fetches / 4 a batch, +2
    assert role_defaults(["store"], own) == ("threads", 3)
