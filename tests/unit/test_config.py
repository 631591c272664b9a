import pytest
from pydantic import ValidationError

from tripmail.config import Settings, describe_refusal
from tripmail.contacts.audience import MAX_TERMS


def test_defaults_run_locally_without_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRIPMAIL_DATABASE_URL", "TRIPMAIL_REDIS_URL", "TRIPMAIL_SMTP_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url == "sqlite:///var/tripmail.db"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.smtp_url.get_secret_value() == "smtp://127.0.0.1:1025"


def test_environment_overrides_with_tripmail_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPMAIL_DATABASE_URL", "postgresql+psycopg://db/tripmail")
    monkeypatch.setenv("TRIPMAIL_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("TRIPMAIL_SMTP_URL", "smtp://user:secret@relay:587?starttls=1")
    monkeypatch.setenv("TRIPMAIL_SMTP_CONNECTIONS", "8")
    settings = Settings(_env_file=None)
    assert settings.database_url == "postgresql+psycopg://db/tripmail"
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.smtp_connections == 8
    assert "secret" not in repr(settings)


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPMAIL_SMTP_CONNECTIONS", "0")
    with pytest.raises(ValidationError, match="smtp_connections"):
        Settings(_env_file=None)


def test_settings_are_frozen() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(ValidationError):
        settings.redis_url = "redis://elsewhere"  # type: ignore[misc]


def test_a_task_limit_at_or_above_the_visibility_timeout_is_refused() -> None:
    refusal = r"TRIPMAIL_TASK_TIME_LIMIT_S \(600\) must be below TRIPMAIL_VISIBILITY_TIMEOUT_S \(600\)"
    with pytest.raises(ValidationError, match=refusal):
        Settings(_env_file=None, visibility_timeout_s=600, task_time_limit_s=600)


def test_a_retry_waits_at_most_half_the_visibility_timeout() -> None:
    # A retry waits unacked inside a worker: held past the visibility timeout, Redis would hand it out again.
    assert Settings(_env_file=None).retry_wait_max_s == 60
    assert Settings(_env_file=None, visibility_timeout_s=15, task_time_limit_s=10).retry_wait_max_s == 7


def test_a_body_limit_that_attachments_within_theirs_would_not_fit_is_refused() -> None:
    # 12 MiB of attachments are 16 MiB of base64, which leaves nothing of a 16 MiB body for the rest.
    with pytest.raises(ValidationError, match=r"TRIPMAIL_MAX_BODY_BYTES \(16777216\) must be above"):
        Settings(_env_file=None, attachment_max_bytes=12 * 1024 * 1024)


@pytest.mark.parametrize("auth", ["ops", "ops:", ":pw", "ops:a,b"])
def test_flower_auth_is_one_user_and_password(monkeypatch: pytest.MonkeyPatch, auth: str) -> None:
    monkeypatch.setenv("TRIPMAIL_FLOWER_AUTH", auth)
    with pytest.raises(ValidationError, match="TRIPMAIL_FLOWER_AUTH must be user:password, without a comma"):
        Settings(_env_file=None)


def test_flower_auth_stays_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPMAIL_FLOWER_AUTH", "ops:hunter2")
    settings = Settings(_env_file=None)
    assert settings.flower_auth is not None
    assert settings.flower_auth.get_secret_value() == "ops:hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRIPMAIL_DATABASE_URL", "postgresql+psycopg://tripmail:CHANGE-ME@db.internal:5432/tripmail"),
        ("TRIPMAIL_REDIS_URL", "redis://:change-me@redis.internal:6379/0"),
        ("TRIPMAIL_SMTP_URL", "smtp://tripmail:CHANGE-ME@smtp.example.com:587?starttls=1"),
        ("TRIPMAIL_FLOWER_AUTH", "admin:CHANGE-ME"),
        ("TRIPMAIL_MAILGUN_SIGNING_KEY", "CHANGE-ME"),
    ],
)
def test_a_placeholder_password_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    assert describe_refusal(refused.value) == (
        f"{variable} still holds the placeholder CHANGE-ME: put the real password or key in its place "
        "(deploy/k8s/secret.yaml, the environment or .env)"
    )


def test_a_refusal_names_each_setting_and_quotes_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPMAIL_SMTP_URL", "smtp://tripmail:CHANGE-ME-hunter2@smtp.example.com:587")
    monkeypatch.setenv("TRIPMAIL_FLOWER_AUTH", "admin:CHANGE-ME-hunter2")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    described = describe_refusal(refused.value)
    assert described.startswith("TRIPMAIL_SMTP_URL, TRIPMAIL_FLOWER_AUTH still hold the placeholder CHANGE-ME")
    # pydantic's own text quotes the input, passwords included.
    assert "hunter2" in str(refused.value)
    assert "hunter2" not in described


def test_a_refused_field_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPMAIL_SMTP_CONNECTIONS", "0")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    assert describe_refusal(refused.value) == "TRIPMAIL_SMTP_CONNECTIONS: Input should be greater than or equal to 1"


def test_the_query_budget_stays_within_what_the_worker_compiles() -> None:
    assert Settings(_env_file=None).query_max_terms == 25_000
    Settings(_env_file=None, query_max_terms=MAX_TERMS)
    with pytest.raises(ValidationError, match="query_max_terms"):
        Settings(_env_file=None, query_max_terms=MAX_TERMS + 1)


def test_the_phone_default_region_is_a_known_region_code() -> None:
    assert Settings(phone_default_region=" ua ").phone_default_region == "UA"
    assert Settings(phone_default_region="").phone_default_region is None
    with pytest.raises(ValidationError, match="TRIPMAIL_PHONE_DEFAULT_REGION"):
        Settings(phone_default_region="Ukraine")
