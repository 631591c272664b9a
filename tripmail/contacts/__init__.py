"""Contacts: normalised identities, the upsert, typed fields, audiences and consent."""
