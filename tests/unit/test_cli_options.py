"""The options every command shares: `--version`, and one `--log-level` that reaches the worker's Celery too."""

import os
from importlib.metadata import version

import pytest
from click.testing import CliRunner

from tripmail.cli.main import main


@pytest.fixture(autouse=True)
def logging_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands configure the process's logging, which here is pytest's, shared with the tests that follow."""
    monkeypatch.setattr("tripmail.logs.configure", lambda *args, **kwargs: None)


def test_version_prints_the_installed_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"tripmail, version {version('tripmail')}\n"


@pytest.mark.parametrize(("given", "celery_gets"), [([], "INFO"), (["--log-level", "debug"], "DEBUG")])
def test_the_worker_runs_celery_at_the_commands_log_level(
    monkeypatch: pytest.MonkeyPatch, given: list[str], celery_gets: str
) -> None:
    started: list[list[str]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        started.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    result = CliRunner().invoke(main, [*given, "worker", "--concurrency", "1"])
    assert result.exit_code == 0, result.output
    [argv] = started
    assert argv[argv.index("--loglevel") + 1] == celery_gets


def test_a_log_level_python_does_not_know_is_refused_naming_the_choices() -> None:
    result = CliRunner().invoke(main, ["--log-level", "verbose", "worker"])
    assert result.exit_code == 2
    assert "'verbose' is not one of" in result.output
