from alembic import command
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import Settings
from tripmail.migrations import alembic_config


def test_migrations_match_the_models(settings: Settings, sessions: sessionmaker[Session]) -> None:
    # `sessions` has upgraded the database to head; `check` fails if the models need a migration not written.
    command.check(alembic_config(settings.database_url))
