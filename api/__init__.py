"""The HTTP process: authenticate, validate, map to the canonical trigger request, enqueue, answer."""
