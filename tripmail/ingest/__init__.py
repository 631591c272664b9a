"""Ingest: event types, the dedupe rule for keyed events, the recording of accepted events, their fan-out to an
audience, the transactions that run both, and the events' history."""
