"""The physical limit for a Python sender here: a bare aiosmtplib loop, in its own process.

Run as `python -m bench.raw_sender --port N --count C --connections K --domain D --prebuilt KIND`. Before the
clock it renders every message (the quickstart template through tripmail.rendering.templates) and builds it, connects
nothing, and prints READY. KIND `message` (PERFORMANCE.md's physical limit) keeps stdlib EmailMessage objects,
which `send_message` flattens in the loop, as an app with its messages in hand would send them; KIND `bytes`
keeps them flattened by tripmail.delivery.mime.build_email, leaving only the SMTP client and the sink in the
loop. On a
`go` line on stdin it opens K connections and sends every message over them (each connection takes the next
message as soon as its last one is accepted), then prints `DONE <sent> <failed> <seconds>`.
"""

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from bench.quickstart import FIRST_NAME, quickstart_email, recipient, reset_link, stdlib_message
from tripmail.delivery.mime import build_email
from tripmail.rendering.templates import render_email, template_context

# (envelope sender, recipient, flattened message) or a message that send_message flattens and addresses itself.
Outgoing = tuple[str, str, bytes] | EmailMessage
PREBUILT = ("message", "bytes")


def build_messages(count: int, domain: str, prebuilt: str) -> list[Outgoing]:
    email = quickstart_email()
    now = datetime.now(UTC)
    messages: list[Outgoing] = []
    for index in range(count):
        address = recipient(index, domain)
        contact = {"first_name": FIRST_NAME, "id": f"c{index}", "email": address, "phone": None, "external_id": None}
        event = {"id": f"e{index}", "name": "FORGOT_PASSWORD", "key": f"raw-{index}", "received_at": now.isoformat()}
        context = template_context(contact, {"forgot_password_link": reset_link(index)}, event, {})
        rendered = render_email(email.subject, email.html, email.text, context)
        message_id = f"<raw.{index}@quickstart.test>"
        if prebuilt == "message":
            assert rendered.text is not None, "the quickstart has a text part"
            assert rendered.html is not None, "the quickstart has an HTML part"
            messages.append(
                stdlib_message(
                    sender=email.sender,
                    to=address,
                    subject=rendered.subject,
                    text=rendered.text,
                    html=rendered.html,
                    date=format_datetime(now),
                    message_id=message_id,
                )
            )
            continue
        content = build_email(
            sender=email.sender,
            recipient=address,
            rendered=rendered,
            message_id=message_id,
            now=now,
        )
        messages.append((email.envelope_sender, address, b"".join(content)))
    return messages


async def _one_connection(host: str, port: int, messages: Iterator[Outgoing], failures: list[str]) -> int:
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
    await client.connect()
    sent = 0
    # The iterator is shared: whichever connection is free takes the next message.
    for outgoing in messages:
        try:
            if isinstance(outgoing, EmailMessage):
                await client.send_message(outgoing)
            else:
                sender, address, content = outgoing
                await client.sendmail(sender, [address], content)
            sent += 1
        except aiosmtplib.SMTPException as exc:
            failures.append(str(exc))
    await client.quit()
    return sent


async def send_all(host: str, port: int, messages: list[Outgoing], connections: int) -> tuple[int, list[str]]:
    shared = iter(messages)
    failures: list[str] = []
    counts = await asyncio.gather(*(_one_connection(host, port, shared, failures) for _ in range(connections)))
    return sum(counts), failures


def _flat(outgoing: Outgoing) -> bytes:
    return outgoing.as_bytes() if isinstance(outgoing, EmailMessage) else outgoing[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--prebuilt", choices=PREBUILT, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    messages = build_messages(args.count, args.domain, args.prebuilt)
    size = sum(len(_flat(outgoing)) for outgoing in messages[:100]) / max(1, min(100, len(messages)))
    print(
        f"READY built {len(messages)} messages ({args.prebuilt}) in {time.perf_counter() - started:.1f} s, "
        f"{size:.0f} B each",
        flush=True,
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
