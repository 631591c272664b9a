"""The long-running processes: the api, the worker, Flower, the scheduler and the mail catcher."""

import os
import sys
from collections.abc import MutableMapping

import click

from tripmail.config import get_settings


def _count_in_files(env: MutableMapping[str, str], role: str) -> None:
    """prometheus-client's multiprocess mode for the processes started with `env`: each counts into files of a
    directory of their own, made empty so nothing an earlier run counted is counted again, and a scrape sums them."""
    import tempfile

    from tripmail.metrics import MULTIPROCESS_DIR

    env[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix=f"tripmail-{role}-metrics-")


# How long the api keeps an idle connection open: longer than a load balancer's idle timeout (60 s at the usual
# ones). Closed first, by uvicorn's 5 s default, a connection the balancer reuses at that moment answers 502.
KEEP_ALIVE_S = 75


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes.")
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API."""
    import uvicorn

    if workers > 1:
        # Each process counts the events it answers; /metrics, whichever process answers it, serves their sum.
        _count_in_files(os.environ, "api")
    settings = get_settings()
    if settings.metrics_port is not None:
        from tripmail.metrics import serve_api_metrics

        serve_api_metrics(settings, settings.metrics_port)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def _lane_queues(context: click.Context, parameter: click.Parameter, value: str | None) -> list[str]:
    """The Celery queues of the lanes named (all of them by default), fast lane first."""
    from tripmail.queue import QUEUES

    named = set(QUEUES) if value is None else {name.strip() for name in value.split(",")}
    if not named or not named <= set(QUEUES):
        raise click.BadParameter(f"{value!r}: the lanes are {', '.join(QUEUES)} (comma-separated)")
    return [queue for lane, queue in QUEUES.items() if lane in named]


@click.command()
@click.option("--concurrency", default=2, show_default=True, type=int, help="Pool processes.")
@click.option(
    "--hostname",
    help="The worker's node name in Flower and in its logs (Celery's %h, %n, %d apply); unique per worker. "
    "[default: celery@HOST]",
)
@click.option(
    "--queues",
    callback=_lane_queues,
    help="The lanes it takes tasks from, comma-separated: transactional (the fast lane), bulk; from both, it always "
    "takes the fast lane's first. [default: transactional,bulk]",
)
@click.pass_obj
def worker(log_level: str, concurrency: int, hostname: str | None, queues: list[str]) -> None:
    """Run a Celery worker; start more of them, anywhere, against the same Redis to scale out."""
    from tripmail.delivery.smtp import parse_relays

    try:
        parse_relays(get_settings().smtp_url.get_secret_value())
    except ValueError as exc:
        raise click.ClickException(f"TRIPMAIL_SMTP_URL: {exc}") from exc
    argv = [sys.executable, "-m", "celery", "-A", "worker.app:celery", "worker"]
    argv += [
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--loglevel",
        log_level,
        "--without-gossip",
        "--without-mingle",
        *(["--hostname", hostname] if hostname else []),
    ]
    env = dict(os.environ)
    if get_settings().worker_metrics_port is not None:
        # Each pool process writes its metrics to files there, and the worker's main process serves them summed on
        # TRIPMAIL_WORKER_METRICS_PORT.
        _count_in_files(env, "worker")
    # exec, so signals from a supervisor reach Celery itself and its warm shutdown runs.
    os.execve(sys.executable, argv, env)  # noqa: S606 - argv is built here, not from input


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=5555, show_default=True, type=int)
def flower(host: str, port: int) -> None:
    """Flower, Celery's monitor, on the configured broker: workers, tasks, queues."""
    import ipaddress

    auth = get_settings().flower_auth
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if auth is None and not loopback:
        raise click.ClickException(
            f"refusing to serve Flower on {host} without TRIPMAIL_FLOWER_AUTH=user:password: whoever reaches it can "
            "see every task and stop workers"
        )
    # Flower reads its options from FLOWER_* too: the password stays out of the process list.
    env = os.environ | ({"FLOWER_BASIC_AUTH": auth.get_secret_value()} if auth is not None else {})
    argv = [sys.executable, "-m", "celery", "-A", "worker.app:celery", "flower", f"--address={host}", f"--port={port}"]
    os.execve(sys.executable, argv, env)  # noqa: S606 - argv is built here, not from input


@click.command()
def scheduler() -> None:
    """Hand runs whose wait is over, and messages and webhooks due to be tried again, to the workers, and publish
    again tasks Redis lost; one is enough, more only hand the same ones out twice."""
    # exec, as for the worker: a supervisor's signals reach the scheduler itself.
    os.execv(sys.executable, [sys.executable, "-m", "worker.schedule"])  # noqa: S606 - a fixed argv


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1025, show_default=True, type=int)
@click.option("--list", "list_only", is_flag=True, help="List the stored messages and exit.")
def mailcatcher(host: str, port: int, list_only: bool) -> None:
    """A local SMTP server that stores what it receives under TRIPMAIL_MAIL_DIR (var/mail)."""
    from tripmail.mailcatcher import list_mail, serve

    directory = get_settings().mail_dir
    if not list_only:
        serve(directory, host=host, port=port)
        return
    caught = list_mail(directory)
    for mail in caught:
        click.echo(f"{mail.received_at:%Y-%m-%d %H:%M:%S}  {mail.recipients}  {mail.subject!r}  {mail.path}")
    click.echo(f"{len(caught)} message(s) in {directory}")
