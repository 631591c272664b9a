"""Canonical pydantic models every dialect maps to and from."""
