"""What a process's /metrics says."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET `url`/metrics: each sample's value by its name and labels."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def events(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str, dialect: str = "native"
) -> float:
    return scraped.get(("tripmail_events_total", (("dialect", dialect), ("outcome", outcome))), 0.0)
