"""The files and functions the README and docs/architecture.md name exist, so the map stays true as code moves."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "architecture.md"]
# `api/native.py` or `tripmail/ingest/` in backticks: a path of this repository.
PATH = re.compile(r"`((?:api|worker|tripmail|tests|bench|deploy|docs)/[\w/.-]*)`")
# `tripmail/delivery/flow.py`, `deliver_messages`: a name defined in that file.
NAMED = re.compile(r"`((?:api|worker|tripmail)/[\w/]+\.py)`, `(\w+)`")


def _mentions(pattern: re.Pattern[str]) -> list[tuple[str, ...]]:
    return sorted({(doc.name, *match.groups()) for doc in DOCUMENTS for match in pattern.finditer(doc.read_text())})


@pytest.mark.parametrize(("document", "path"), _mentions(PATH))
def test_a_named_path_exists(document: str, path: str) -> None:
    assert (ROOT / path).exists(), f"{document} names {path}, which is not in the repository"


@pytest.mark.parametrize(("document", "path", "name"), _mentions(NAMED))
def test_a_named_function_is_defined_in_its_file(document: str, path: str, name: str) -> None:
    source = (ROOT / path).read_text()
    assert re.search(rf"^\s*(?:async def|def|class) {name}\b|^{name} = ", source, re.M), (
        f"{document} names {name} in {path}, which does not define it"
    )
