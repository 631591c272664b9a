"""Outgoing webhooks: automation steps and delivery events, posted only to allowed addresses."""
