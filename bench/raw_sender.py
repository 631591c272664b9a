"""The physical limit for a Python sender here: a bare aiosmtplib loop, in its own process.

Run as `python -m bench.raw_sender --port N --count C --connections K --domain D`. Before the clock it renders
and builds every message the way Tripmail does (the quickstart template through tripmail.rendering, then
tripmail.delivery.build_email, which flattens to bytes), connects nothing, and prints READY. On a `go` line on
stdin it opens K connections and sends every message over them (each connection takes the next message as soon
as its last one is accepted), then prints `DONE <sent> <failed> <seconds>`.
"""

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import aiosmtplib

from bench.quickstart import FIRST_NAME, quickstart_email, recipient, reset_link
from tripmail.delivery import build_email
from tripmail.rendering import render_email, template_context

Outgoing = tuple[str, str, bytes]


def build_messages(count: int, domain: str) -> list[Outgoing]:
    email = quickstart_email()
    now = datetime.now(UTC)
    messages = []
    for index in range(count):
        address = recipient(index, domain)
        contact = {"first_name": FIRST_NAME, "id": f"c{index}", "email": address, "phone": None, "external_id": None}
        event = {"id": f"e{index}", "name": "FORGOT_PASSWORD", "key": f"raw-{index}", "received_at": now.isoformat()}
        context = template_context(contact, {"forgot_password_link": reset_link(index)}, event, {})
        rendered = render_email(email.subject, email.html, email.text, context)
        content = build_email(
            sender=email.sender,
            recipient=address,
            rendered=rendered,
            message_id=f"<raw.{index}@quickstart.test>",
            now=now,
        )
        messages.append((email.envelope_sender, address, content))
    return messages


async def _one_connection(host: str, port: int, messages: Iterator[Outgoing], failures: list[str]) -> int:
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
    await client.connect()
    sent = 0
    # The iterator is shared: whichever connection is free takes the next message.
    for sender, address, content in messages:
        try:
            await client.sendmail(sender, [address], content)
            sent += 1
        except aiosmtplib.SMTPException as exc:
            failures.append(f"{address}: {exc}")
    await client.quit()
    return sent


async def send_all(host: str, port: int, messages: list[Outgoing], connections: int) -> tuple[int, list[str]]:
    shared = iter(messages)
    failures: list[str] = []
    counts = await asyncio.gather(*(_one_connection(host, port, shared, failures) for _ in range(connections)))
    return sum(counts), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--domain", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    messages = build_messages(args.count, args.domain)
    size = sum(len(content) for _, _, content in messages) / max(1, len(messages))
    print(
        f"READY built {len(messages)} messages in {time.perf_counter() - started:.1f} s, {size:.0f} B each", flush=True
    )
    if sys.stdin.readline().strip() != "go":
        return
    started = time.perf_counter()
    sent, failures = asyncio.run(send_all(args.host, args.port, messages, args.connections))
    elapsed = time.perf_counter() - started
    for failure in failures[:5]:
        print(f"failed: {failure}", file=sys.stderr)
    print(f"DONE {sent} {len(failures)} {elapsed:.3f}", flush=True)


if __name__ == "__main__":
    main()
