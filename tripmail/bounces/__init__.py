"""Bounces and complaints that come back after a relay accepted a message, and the providers' webhooks for them."""
