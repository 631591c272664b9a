"""The launcher's environment: a process started with it reads the very Settings the test or bench built."""

import os
from pathlib import Path

import pytest

from tests.support.stack import service_env
from tripmail.config import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in os.environ:
        if name.startswith("TRIPMAIL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def far_from_defaults() -> Settings:
    """Settings whose every kind of field (text, secret, path, number, flag, duration, optional) is set."""
    return Settings(
        _env_file=None,
        database_url="postgresql+psycopg://tripmail@db.test/tripmail",
        redis_url="redis://cache.test:6380/3",
        smtp_url="smtp://user:secret@relay.test:2525, smtp://relay2.test:25",
        smtp_timeout_s=7.5,
        smtp_connections=9,
        mail_dir=Path("/srv/mail"),
        visibility_timeout_s=40,
        task_time_limit_s=20,
        send_retry_schedule="1s,5s",
        send_give_up_after="2h",
        scheduler_interval_s=0.2,
        bounce_domain="bounces.example.com",
        phone_default_region="UA",
        mailgun_signing_key="key-1",
        log_format="json",
        metrics_port=9100,
        flower_auth="admin:hunter2",
        rate_limit_burst=10,
        webhook_allow_networks="10.0.0.0/8",
        bench_baseline=True,
    )


def test_the_environment_reads_back_as_the_settings_it_came_from(clean_env: pytest.MonkeyPatch) -> None:
    settings = far_from_defaults()
    for name, value in service_env(settings).items():
        clean_env.setenv(name, value)
    assert Settings(_env_file=None) == settings


def test_each_field_goes_by_its_own_name() -> None:
    settings = far_from_defaults()
    derived = {
        name.removeprefix("TRIPMAIL_").lower(): value
        for name, value in service_env(settings).items()
        if name.startswith("TRIPMAIL_")
    }
    assert Settings(_env_file=None, **derived) == settings  # type: ignore[arg-type]


def test_no_variable_of_the_launching_process_reaches_the_stack(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TRIPMAIL_METRICS_PORT", "9100")
    settings = Settings(_env_file=None, metrics_port=None)
    assert "TRIPMAIL_METRICS_PORT" not in service_env(settings)
