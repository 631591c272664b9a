"""Tripmail's shared domain: configuration, models, canonical schemas and the work both processes share."""
