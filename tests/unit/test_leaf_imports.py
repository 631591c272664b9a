import json
import subprocess
import sys

# The api process hands sending to the worker: loading the SMTP stack there costs memory and start-up time, and it
# means the api reaches delivery code it must not call.
SMTP_STACK = ("aiosmtplib", "uvloop", "tripmail.delivery.smtp")

# Every module of the api, each imported in a fresh interpreter, so no module another test loaded hides the chain.
IMPORT_ALL_OF_API = """
import importlib, json, pkgutil, sys
import api
for module in pkgutil.walk_packages(api.__path__, "api."):
    importlib.import_module(module.name)
print(json.dumps(sorted(name for name in sys.modules if name in SMTP_STACK)))
"""


def test_the_api_loads_no_smtp_stack() -> None:
    code = f"SMTP_STACK = {SMTP_STACK!r}\n{IMPORT_ALL_OF_API}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []
