"""The commands a user runs from the README, as subprocesses with TRIPMAIL_* in the environment."""

import os
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from redis import Redis

from tests.support.databases import new_database
from tests.support.polling import wait_until
from tests.support.ports import free_port, port_open
from tests.support.stack import service_env, stop
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.setup.tokens import SECRET_PREFIX, find_token, revoked_key

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell; on SQLite unless the test parametrizes it with a backend."""
    return os.environ | {
        "TRIPMAIL_DATABASE_URL": new_database(request, getattr(request, "param", "sqlite"), tmp_path),
        "TRIPMAIL_MAIL_DIR": str(tmp_path / "mail"),
    }


def tripmail(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tripmail", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("env", ["sqlite", "postgresql"], indirect=True)
def test_migrate_apply_twice_and_token_create(env: dict[str, str]) -> None:
    assert tripmail(env, "migrate").returncode == 0
    assert tripmail(env, "migrate").stdout.strip() == "database is at the latest schema"
    first = tripmail(env, "apply", str(QUICKSTART))
    second = tripmail(env, "apply", str(QUICKSTART))
    created = tripmail(env, "token", "create", "--workspace", "quickstart", "--scopes", "events:write,contacts:write")

    assert first.returncode == 0 and "created automation Password reset" in first.stdout
    assert second.returncode == 0 and second.stdout.strip().endswith("already applied, nothing changed")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith(SECRET_PREFIX)
    sessions = make_sessionmaker(Settings(database_url=env["TRIPMAIL_DATABASE_URL"]))
    with sessions() as session:
        token = find_token(session, secret)
        assert token is not None and token.scopes == ["contacts:write", "events:write"]


def test_cli_errors_are_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    assert tripmail(env, "migrate").returncode == 0
    missing = tripmail(env, "token", "create", "--workspace", "nope")
    bad_scope = tripmail(env, "token", "create", "--workspace", "nope", "--scopes", "mail:send")
    broken = tmp_path / "broken.yaml"
    broken.write_text("workspace: acme\nautomations: [{name: x, steps: []}]\n")
    bad_file = tripmail(env, "apply", str(broken))

    assert missing.returncode != 0 and "no workspace 'nope'" in missing.stderr
    assert bad_scope.returncode != 0 and "unknown scope(s) mail:send" in bad_scope.stderr
    assert bad_file.returncode != 0 and "automations.0.steps" in bad_file.stderr
    assert "Traceback" not in missing.stderr + bad_scope.stderr + bad_file.stderr


@pytest.mark.parametrize("command", ["api", "worker", "scheduler"])
def test_a_placeholder_password_stops_each_process_at_start_naming_the_setting(
    env: dict[str, str], command: str
) -> None:
    # As deploy/k8s/secret.yaml ships it, applied without being filled in.
    env = env | {"TRIPMAIL_SMTP_URL": "smtp://tripmail:CHANGE-ME@smtp.example.com:587?starttls=1"}
    refused = tripmail(env, command)
    assert refused.returncode == 1
    assert refused.stderr == (
        "Error: invalid settings:\nTRIPMAIL_SMTP_URL still holds the placeholder CHANGE-ME: put the real password or "
        "key in its place (deploy/k8s/secret.yaml, the environment or .env)\n"
    )


def test_mailcatcher_stores_and_lists_what_it_receives(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tripmail", "mailcatcher", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), timeout=30, what="mail catcher")
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Caught?"
        message.set_content("body")
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.send_message(message)
    finally:
        stop(server)
    stored = list((tmp_path / "mail").glob("*.eml"))
    listed = tripmail(env, "mailcatcher", "--list")

    assert len(stored) == 1 and b"Subject: Caught?" in stored[0].read_bytes()
    assert "b@example.com  'Caught?'" in listed.stdout
    assert "1 message(s)" in listed.stdout


def test_token_list_and_revoke(own_settings: Settings) -> None:
    env = service_env(own_settings)
    assert tripmail(env, "apply", str(QUICKSTART)).returncode == 0
    created = [tripmail(env, "token", "create", "--workspace", "quickstart").stdout for _ in range(2)]
    secrets = [output.strip().splitlines()[-1] for output in created]
    assert created[0].startswith(f"token 1 ({secrets[0][:12]}…) for workspace quickstart with scopes events:write")
    listed = tripmail(env, "token", "list", "--workspace", "quickstart")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"1  quickstart  {secrets[0][:12]}…  events:write  created ")
    assert lines[0].endswith("  live") and lines[1].startswith("2  quickstart")
    assert lines[-1] == "2 token(s) of workspace quickstart"
    assert not any(secret[12:] in listed.stdout for secret in secrets)

    revoked = tripmail(env, "token", "revoke", "1")
    again = tripmail(env, "token", "revoke", "1")
    unknown = tripmail(env, "token", "revoke", "2", "99")
    assert revoked.returncode == 0 and revoked.stdout.startswith("token 1 of workspace quickstart revoked at ")
    assert revoked.stderr == ""
    store = Redis.from_url(own_settings.redis_url)
    assert 0 < store.ttl(revoked_key(1)) <= own_settings.revoked_marker_s
    assert again.returncode == 0 and "token 1 of workspace quickstart was already revoked at " in again.stdout
    assert unknown.returncode != 0 and "no token with id 99" in unknown.stderr and "Traceback" not in unknown.stderr
    assert store.exists(revoked_key(2)) == 0  # none of them revoked when one id is unknown
    every = tripmail(env, "token", "list").stdout.splitlines()
    assert " revoked 20" in every[0] and every[1].endswith("  live") and every[-1] == "2 token(s)"
    missing = tripmail(env, "token", "list", "--workspace", "nope")
    assert missing.returncode != 0 and "no workspace 'nope'" in missing.stderr

    down = tripmail(env | {"TRIPMAIL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, "token", "revoke", "2")
    assert down.returncode == 0 and down.stdout.startswith("token 2 of workspace quickstart revoked at ")
    assert "warning: Redis (TRIPMAIL_REDIS_URL) is unreachable" in down.stderr
    assert "running api processes may accept them for up to 2 s" in down.stderr
    sessions = make_sessionmaker(own_settings)
    with sessions() as session:
        assert find_token(session, secrets[1]) is None
    sessions.kw["bind"].dispose()
