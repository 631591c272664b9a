"""`tripmail`: every command reads the same TRIPMAIL_* settings."""

import click

from tripmail.cli import bounces, messages, services, setup, suppressions, webhooks
from tripmail.config import get_settings

# Python's and Celery's names alike.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.group()
@click.version_option(package_name="tripmail", prog_name="tripmail")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Logging level of every command, the worker's Celery included.",
)
@click.pass_context
def main(context: click.Context, log_level: str) -> None:
    """Tripmail: application events in, email out."""
    from pydantic import ValidationError

    from tripmail.config import describe_refusal
    from tripmail.logs import configure

    # Every command checks the settings here, before it starts anything: the api, worker and scheduler refuse
    # to start on a setting they would refuse later.
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{describe_refusal(exc)}") from None
    configure(log_level, log_format=settings.log_format)
    context.obj = log_level.upper()


for command in (
    setup.migrate,
    setup.apply,
    setup.token,
    messages.messages,
    suppressions.suppressions,
    webhooks.webhooks,
    services.api,
    services.worker,
    services.flower,
    services.scheduler,
    services.mailcatcher,
    bounces.bounces,
):
    main.add_command(command)
