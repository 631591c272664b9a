"""Set-up by operators: apply files and API tokens."""
