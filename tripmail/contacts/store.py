"""Contacts: finding, creating and updating them."""

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tripmail.contacts.identity import email_md5, email_xxh
from tripmail.db import insert_if_absent
from tripmail.errors import InvalidRequest, NotFound
from tripmail.ids import new_id
from tripmail.models import Contact
from tripmail.schemas.trigger import Audience, ContactUpdate


def find_contact(session: Session, workspace_id: int, audience: Audience) -> Contact | None:
    query = select(Contact).where(Contact.workspace_id == workspace_id)
    if audience.contact_id is not None:
        query = query.where(Contact.id == audience.contact_id)
    elif audience.email is not None:
        query = query.where(Contact.email == audience.email)
    elif audience.external_id is not None:
        query = query.where(Contact.external_id == audience.external_id)
    elif audience.phone is not None:
        query = query.where(Contact.phone == audience.phone)
    elif audience.email_md5 is not None:
        query = query.where(Contact.email_md5 == audience.email_md5)
    elif audience.email_xxh is not None:
        query = query.where(Contact.email_xxh == audience.email_xxh)
    else:
        raise InvalidRequest(
            "the audience names no contact: give a contact id, email, phone or external id", field="contact"
        )
    return session.scalars(query.limit(1)).first()


def upsert_contact(
    session: Session, workspace_id: int, audience: Audience, update: ContactUpdate, *, now: datetime
) -> Contact:
    """Find the audience's contact or create it, then merge the update's fields onto it."""
    contact = find_contact(session, workspace_id, audience)
    if contact is None:
        if audience.contact_id is not None or audience.email_md5 is not None or audience.email_xxh is not None:
            raise NotFound("no contact matches the audience, and its identifier cannot create one", field="audience")
        consent = update.email_consent_if_created
        contact = _create_contact(session, workspace_id, audience, email_consent=consent is not False, now=now)
    update_contact(contact, audience, update, now=now)
    session.flush()
    return contact


def update_contact(contact: Contact, audience: Audience, update: ContactUpdate, *, now: datetime) -> None:
    """Merge the update onto the contact: existing field keys updated, others kept."""
    changed = False
    for name in ("phone", "external_id"):
        value = getattr(audience, name)
        if value is not None and getattr(contact, name) != value:
            setattr(contact, name, value)
            changed = True
    merged = {**contact.fields, **update.fields}
    if merged != contact.fields:
        contact.fields = merged
        changed = True
    if update.email_consent is not None and contact.consents.get("email") != update.email_consent:
        contact.consents = {**contact.consents, "email": update.email_consent}
        changed = True
    if changed:
        contact.updated_at = now


def new_contact_values(workspace_id: int, audience: Audience, *, email_consent: bool, now: datetime) -> dict[str, Any]:
    """The row of a contact the audience creates."""
    return {
        "id": new_id(),
        "workspace_id": workspace_id,
        "email": audience.email,
        "email_md5": email_md5(audience.email) if audience.email else None,
        "email_xxh": email_xxh(audience.email) if audience.email else None,
        "phone": audience.phone,
        "external_id": audience.external_id,
        "fields": {},
        "consents": {"email": email_consent},
        "created_at": now,
        "updated_at": now,
    }


def _create_contact(
    session: Session, workspace_id: int, audience: Audience, *, email_consent: bool, now: datetime
) -> Contact:
    values = new_contact_values(workspace_id, audience, email_consent=email_consent, now=now)
    if audience.email is None:
        contact = Contact(**values)
        session.add(contact)
        return contact
    # Another worker may create the same contact at the same moment: the email is unique per workspace.
    insert_if_absent(session, Contact, values, ["workspace_id", "email"])
    created = find_contact(session, workspace_id, audience)
    assert created is not None, "inserted or already there"
    return created
