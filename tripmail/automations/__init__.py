"""Automations: which ones an event starts, their programs of steps, the conditions and the runs."""
