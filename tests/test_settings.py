"""Settings have one home: every option is documented in the README and read from its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_settings_table():
    text = README.read_text(encoding="utf-8")
    missing = [opt.env_name(name) for name, opt in settings.OPTIONS.items() if f"`{opt.env_name(name)}`" not in text]
    assert not missing, f"undocumented settings: {missing}"


def test_a_setting_comes_from_its_environment_variable(monkeypatch):
    monkeypatch.setenv("CRAWLCLUSTER_PER_HOST_CONCURRENCY", "3")
    monkeypatch.setenv("CRAWLCLUSTER_RETRY_DELAYS", "1, 2.5,10")
    monkeypatch.setenv("CRAWLCLUSTER_OBEY_ROBOTS", "false")
    assert settings.get("per_host_concurrency") == 3
    assert settings.get("retry_delays") == [1.0, 2.5, 10.0]
    assert settings.get("obey_robots") is False


@pytest.mark.parametrize("name, value, needle", [
    ("CRAWLCLUSTER_FETCH_BATCH_SIZE", "0", "at least 1"),
    ("CRAWLCLUSTER_RETRY_DELAYS", "soon", "comma-separated"),
    ("CRAWLCLUSTER_OBEY_ROBOTS", "perhaps", "boolean"),
])
def test_a_bad_value_is_a_configuration_error_naming_the_variable(monkeypatch, name, value, needle):
    monkeypatch.setenv(name, value)
    option = next(n for n, o in settings.OPTIONS.items() if o.env_name(n) == name)
    with pytest.raises(ConfigurationError) as error:
        settings.get(option)
    assert name in str(error.value) and needle in str(error.value)
