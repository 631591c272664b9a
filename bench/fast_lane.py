"""The fast lane: accept -> SMTP-accepted latency of transactional events at a steady rate while a marketing fan-out
of 50,000 emails drains, against the same latency without the fan-out, measured in ONE run on one stack.

The stack is bench.delivery's (redis-server, the counting sink, `tripmail api`, SQLite, examples/quickstart.yaml,
whose password reset is transactional) with the workers README recommends: `tripmail worker --concurrency 2` (both
lanes, the fast lane's tasks first) beside `tripmail worker --queues transactional --concurrency 1`.

1. Baseline: N password resets via `POST /v1/events` at the rate, nothing else queued (after N/5 to warm up).
2. The quickstart workspace gets a marketing campaign (not transactional) to 50,000 contacts, started through
   altcraft's trigger; once its first emails reach the sink (it is draining, and still being planned), the same N
   resets at the same rate; then N more once it is planned, while only its delivery tasks run. The campaign's
   emails sent during each window and those still to send at its end are reported: a figure holds only if the
   fan-out was still draining throughout.
Run: `python -m bench.fast_lane [--events 1000] [--audience 50000]` (see --help); `make bench` runs it.
"""

import argparse
import contextlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from bench.delivery import (
    RESULTS,
    LatencyRun,
    Options,
    Stack,
    adopt_worker,
    machine_line,
    measure_latency,
    record,
    source_line,
    start_stack,
    start_worker,
    wait_for_sink,
)
from bench.processes import ProcessGroup, Started
from tests.support.builders import apply_spec, contact_row
from tripmail.db import make_sessionmaker
from tripmail.models import Contact, Workspace

CAMPAIGN = 4343
CAMPAIGN_DOMAIN = "fan-out.example.com"
START_MARK = "<!-- bench.fast_lane: start (generated; replaced by each run) -->"
END_MARK = "<!-- bench.fast_lane: end -->"


@dataclass(frozen=True)
class FanOutWindow:
    """The campaign's progress at the sink over the latency window under load."""

    audience: int
    sent_before: int
    sent_during: int
    still_to_send: int
    drained_in_s: float | None


def add_campaign(stack: Stack, audience: int) -> None:
    """A marketing campaign of the quickstart workspace to `audience` contacts of their own, inserted in bulk."""
    sessions = make_sessionmaker(stack.settings)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        apply_spec(
            session,
            {
                "workspace": "quickstart",
                "contact_fields": [{"name": "rank", "type": "number"}],
                "templates": [
                    {"key": "news", "subject": "News, {{ contact.email }}", "text": "This week: {{ contact.rank }}"}
                ],
                "automations": [
                    {"name": "Newsletter", "id": CAMPAIGN, "steps": [{"send_email": {"template": "news"}}]}
                ],
            },
        )
        workspace_id = session.scalars(select(Workspace.id).where(Workspace.key == "quickstart")).one()
        rows = [
            contact_row(workspace_id, f"fan-{index:06}", f"reader{index}@{CAMPAIGN_DOMAIN}", {"rank": index}, now)
            for index in range(audience)
        ]
        for start in range(0, audience, 10_000):
            session.execute(insert(Contact), rows[start : start + 10_000])
    sessions.kw["bind"].dispose()


def start_campaign(stack: Stack) -> None:
    body = {"token": stack.token, "id": CAMPAIGN, "custom_request": {"rank": {"$gte": 0}}}
    answer = httpx.post(f"{stack.api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start/", json=body, timeout=60)
    if answer.json().get("error") != 0:
        raise RuntimeError(f"the campaign did not start: {answer.text}")


def start_fast_lane_worker(stack: Stack) -> Started:
    return adopt_worker(stack, "worker-transactional", queues="transactional", concurrency=1)


Loaded = tuple[str, LatencyRun, FanOutWindow]


def under_fan_out(stack: Stack, options: Options, events: int, rate: float, audience: int) -> list[Loaded]:
    """The resets once the campaign's first emails reach the sink, while it is still planned (an audience chunk per
    transaction, each a turn of SQLite's write lock); then again once it is planned and only its delivery tasks run."""
    print(f"\n[2] the campaign to {audience:,} contacts: started, then the resets once it drains", flush=True)
    add_campaign(stack, audience)
    started = time.monotonic()
    start_campaign(stack)
    while stack.sink.count(CAMPAIGN_DOMAIN).messages == 0:
        if time.monotonic() - started > options.timeout:
            raise RuntimeError("the campaign sent nothing")
        time.sleep(0.1)
    windows: list[tuple[str, LatencyRun, int, int]] = []
    for label, domain in (
        ("while the fan-out is planned and drains", "while-planned.example.com"),
        ("while the fan-out drains, planned already", "while-draining.example.com"),
    ):
        while domain == "while-draining.example.com" and fanning_out(stack):
            time.sleep(0.2)
        before = stack.sink.count(CAMPAIGN_DOMAIN).messages
        print(f"  {label}: {before:,} of the campaign sent, {time.monotonic() - started:.1f} s after its start")
        latency = measure_latency(stack, options, events, rate, domain=domain)
        windows.append((label, latency, before, stack.sink.count(CAMPAIGN_DOMAIN).messages))
    count, completed = wait_for_sink(stack, "campaign", CAMPAIGN_DOMAIN, audience, started=started, options=options)
    drained_in_s = count.last_at - started if completed else None
    return [
        (label, latency, FanOutWindow(audience, before, after - before, audience - after, drained_in_s))
        for label, latency, before, after in windows
    ]


def fanning_out(stack: Stack) -> bool:
    """Whether the campaign's event is still planning its messages."""
    with contextlib.closing(sqlite3.connect(stack.work / "tripmail.db", timeout=30)) as database:
        return bool(database.execute("SELECT count(*) FROM events WHERE status = 'fanning_out'").fetchone()[0])


def report(
    baseline: LatencyRun | None,
    loaded: list[Loaded],
    failures: list[str],
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    lines = [
        f"## Fast lane (`make bench`, bench/fast_lane.py) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine_line()}. Source: {source_line()}. Load average before / after: "
        f"{' '.join(f'{v:.1f}' for v in load[0])} / {' '.join(f'{v:.1f}' for v in load[1])} (other work shares "
        "these cores: the ratios taken in this one run are what count).",
        "",
        "Set-up: as the delivery bench (redis-server, the counting sink, `tripmail api`, SQLite, the quickstart's "
        "transactional password reset), with `tripmail worker --concurrency 2` (both lanes, the fast lane's tasks "
        "first) beside `tripmail worker --queues transactional --concurrency 1`. The load: a marketing campaign of the "
        "same workspace to contacts of its own, started through altcraft's trigger; the resets start once its first "
        "emails reach the sink, and again once it is planned.",
        "",
        "| 202 of `POST /v1/events` -> SMTP-accepted, transactional events | p50 | p99 | max | events matched "
        "| p99 / the baseline's | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = [("without the fan-out (baseline)", baseline)] if baseline is not None else []
    runs += [(label, run) for label, run, _ in loaded]
    for label, run in runs:
        ratio = f"{run.p99_ms / baseline.p99_ms:.2f}x" if baseline is not None and baseline.p99_ms > 0 else "n/a"
        lines.append(
            f"| {run.events:,} at {run.rate:g}/s, {label} | {run.p50_ms:.0f} ms | {run.p99_ms:.0f} ms "
            f"| {run.max_ms:.0f} ms | {run.matched:,}/{run.accepted:,} (from the request's send: p50 "
            f"{run.sent_p50_ms:.0f} ms, p99 {run.sent_p99_ms:.0f} ms; offered {run.offered_rate:.0f}/s) | {ratio} "
            f"| {'' if run is baseline else 'p99 <= 150 ms'} |"
        )
    notes = []
    for label, _, window in loaded:
        drained = f"all sent {window.drained_in_s:.0f} s after its start" if window.drained_in_s else "NOT all sent"
        notes.append(
            f"{label}: of the campaign's {window.audience:,} emails, {window.sent_before:,} were sent when the resets "
            f"started, {window.sent_during:,} during them, {window.still_to_send:,} still to send at their end "
            f"({drained})" + (" — it had drained: that figure is not under load" if not window.still_to_send else "")
        )
    notes += [f"FAILED: {failure}" for failure in failures]
    if notes:
        lines += ["", "Observed during the run:", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def parse() -> tuple[Options, int, int, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000, help="transactional events per measurement")
    parser.add_argument("--rate", type=float, default=100.0, help="transactional events per second")
    parser.add_argument("--audience", type=int, default=50_000, help="emails of the marketing fan-out")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the fan-out may take to drain")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file whose fast-lane section is set")
    parser.add_argument("--no-record", action="store_true", help="print only; leave the results file alone")
    args = parser.parse_args()
    options = Options(
        emails=0,
        batch=0,
        latency_events=args.events,
        latency_rate=args.rate,
        light_latency_rate=0,
        wrk_seconds=0,
        wrk_warmup_seconds=0,
        wrk_connections=0,
        timeout=args.timeout,
        stall=120.0,
        results=None if args.no_record else args.results,
    )
    return options, args.events, args.audience, args.rate


def main() -> None:
    options, events, audience, rate = parse()
    load_before = os.getloadavg()
    failures: list[str] = []
    baseline = None
    loaded: list[Loaded] = []
    with tempfile.TemporaryDirectory(prefix="tripmail-bench-") as folder, ProcessGroup(Path(folder)) as group:
        stack = start_stack(group, Path(folder))
        start_worker(stack)
        start_fast_lane_worker(stack)
        print(f"fast lane bench: {events:,} transactional events at {rate:g}/s, fan-out of {audience:,}", flush=True)
        print("\n[1] baseline: the resets alone, after a warm-up of a fifth as many", flush=True)
        try:
            # The first events of a fresh stack open its SMTP connections and fill its caches: not in the baseline.
            measure_latency(stack, options, max(1, events // 5), rate, domain="warm-up.example.com")
            baseline = measure_latency(stack, options, events, rate, domain="alone.example.com")
            loaded = under_fan_out(stack, options, events, rate, audience)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    section = report(baseline, loaded, failures, (load_before, os.getloadavg()))
    print("\n" + section)
    if options.results is not None:
        record(options.results, section, marks=(START_MARK, END_MARK))
        print(f"recorded in {options.results}")


if __name__ == "__main__":
    main()
