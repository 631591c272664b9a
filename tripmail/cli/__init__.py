"""The `tripmail` command: the group in main.py, its commands grouped by what they are about."""
