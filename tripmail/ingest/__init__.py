"""Ingest: event types, the dedupe rule for keyed events, the recording of accepted events and their history."""
