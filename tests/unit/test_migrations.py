from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import Settings
from tripmail.contacts.identity import email_md5, email_xxh
from tripmail.db import make_engine
from tripmail.migrations import alembic_config


def test_migrations_match_the_models(settings: Settings, sessions: sessionmaker[Session]) -> None:
    # `sessions` has upgraded the database to head; `check` fails if the models need a migration not written.
    command.check(alembic_config(settings.database_url))


def test_0003_backfills_email_hashes_and_links(settings: Settings) -> None:
    config = alembic_config(settings.database_url)
    command.upgrade(config, "0002")
    engine = make_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO workspaces (id, key, from_address, created_at) VALUES (1, 'w', 'a@b.c', '2026-01-01')")
        )
        connection.execute(
            text(
                "INSERT INTO contacts (id, workspace_id, email, fields, consents, created_at, updated_at)"
                " VALUES ('c1', 1, 'user@example.com', '{}', '{}', '2026-01-01', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO automations (id, workspace_id, name, status, transactional, updated_at)"
                " VALUES (7, 1, 'a', 'active', true, '2026-01-01')"
            )
        )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        md5, xxh = connection.execute(text("SELECT email_md5, email_xxh FROM contacts")).one()
        link = connection.execute(text("SELECT link FROM automations")).scalar_one()
    engine.dispose()
    assert (md5, xxh) == (email_md5("user@example.com"), email_xxh("user@example.com"))
    assert md5 == "b58996c504c5638798eb6b511e6f49af"
    assert len(link) == 48
