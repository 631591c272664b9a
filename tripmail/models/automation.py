from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tripmail.models.base import Base


class Template(Base):
    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("workspace_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    syntax: Mapped[str] = mapped_column(String(20))
    # esputnik's "Email > JSON": the param that `data` means inside this template (its `items`).
    data_param: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime]


class Automation(Base):
    __tablename__ = "automations"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        Index("ix_automations_workspace_trigger", "workspace_id", "trigger_normalized"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str | None] = mapped_column(String(100))
    trigger_normalized: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    transactional: Mapped[bool]
    # The secret path segment of altcraft's v1.0 trigger link: /compat/altcraft/trg/<link>/<email|md5|xxh>.
    link: Mapped[str | None] = mapped_column(String(64), unique=True)
    updated_at: Mapped[datetime]
    steps: Mapped[list["AutomationStep"]] = relationship(
        order_by="AutomationStep.position", cascade="all, delete-orphan", lazy="selectin"
    )


class AutomationStep(Base):
    __tablename__ = "automation_steps"
    __table_args__ = (UniqueConstraint("automation_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    position: Mapped[int]
    kind: Mapped[str] = mapped_column(String(30))
    config: Mapped[dict[str, Any]]
