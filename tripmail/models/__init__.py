"""Every table; each row belongs to one workspace."""

from tripmail.models.automation import Automation, AutomationStep, Template
from tripmail.models.base import Base, table_of
from tripmail.models.contact import Contact
from tripmail.models.endpoint import WebhookEndpoint
from tripmail.models.event import Event, EventStatus, EventType
from tripmail.models.message import Message, MessageAttempt, MessageStatus, Suppression, SuppressionSource
from tripmail.models.run import AutomationRun, RunStatus, WebhookDelivery, WebhookStatus
from tripmail.models.workspace import ApiToken, ContactField, Workspace

__all__ = [
    "ApiToken",
    "Automation",
    "AutomationRun",
    "AutomationStep",
    "Base",
    "Contact",
    "ContactField",
    "Event",
    "EventStatus",
    "EventType",
    "Message",
    "MessageAttempt",
    "MessageStatus",
    "RunStatus",
    "Suppression",
    "SuppressionSource",
    "Template",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookStatus",
    "Workspace",
    "table_of",
]
