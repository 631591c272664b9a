"""Bounce and complaint webhooks of email providers, one module each: a wire model and a pure mapper to the reports
tripmail/bounces/reports.py records, plus the provider's own signature check where it has one."""
