"""Delivery: messages planned, claimed, rendered into MIME, sent over SMTP, retried and journaled."""
