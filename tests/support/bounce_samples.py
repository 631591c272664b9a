"""Real bounce and complaint messages (tests/data/bounces, see its README), adapted to the message a test sent."""

from dataclasses import dataclass
from pathlib import Path

SAMPLES_DIR = Path(__file__).parent.parent / "data" / "bounces"


@dataclass(frozen=True)
class Sample:
    """A report as it was received, and the addresses and Message-ID in it that a test puts its own in place of."""

    file: str
    # Where the report went: the original's envelope sender, which is a VERP address in Tripmail's mail.
    return_path: str
    # The recipient the report is about.
    recipient: str
    # The original message's Message-ID, where the report quotes it.
    message_id: str | None = None

    def adapted(self, *, return_path: str | None = None, recipient: str, message_id: str | None = None) -> bytes:
        """The report with the test's addresses and Message-ID in place of the original ones, everywhere they occur."""
        text = (SAMPLES_DIR / self.file).read_bytes().decode("latin-1")
        replacements = {self.recipient: recipient}
        if return_path is not None:
            replacements[self.return_path] = return_path
        if message_id is not None:
            assert self.message_id is not None, f"{self.file} quotes no Message-ID"
            replacements[self.message_id] = message_id
        for original, replacement in replacements.items():
            assert original in text, f"{original} is not in {self.file}"
            text = text.replace(original, replacement)
        return text.encode("latin-1")


# Permanent failures, one per kind of MTA.
POSTFIX = Sample(
    "postfix_02.txt", "xxxxx@mail.wooz.org", "yyyyy@digicool.com", "<14915.64162.965657.699956@anthem.concentric.net>"
)
EXIM = Sample("exim_01.txt", "user@rotzorg.org", "userx@its.example.nl", "<19990920022322.A19735@stereo.rotzorg.org>")
SENDMAIL = Sample(
    "dsn_11.txt",
    "mailman-developers-bounces@python.org",
    "joem@example.com",
    "<mailman.0.1035637201.19036.mailman-developers@python.org>",
)
MICROSOFT = Sample("microsoft_01.txt", "pit-penguins-bounces@plaidworks.com", "userx@example.COM")
QMAIL = Sample("qmail_01.txt", "psa-members-admin@python.org", "userx@example.de")
GMAIL = Sample("simple_17.txt", "gpc-talk-bounces@grizz.org", "userx@example.com")
PERMANENT = {
    "postfix": POSTFIX,
    "exim": EXIM,
    "sendmail": SENDMAIL,
    "microsoft": MICROSOFT,
    "qmail": QMAIL,
    "gmail": GMAIL,
}

# A Postfix warning: still trying (4.3.0, mailbox over quota).
DELAYED = Sample(
    "dsn_17.txt",
    "pray4-team-bounces@strategicnetwork.org",
    "userx@example.fi",
    "<mailman.150418.1209869464.31038.pray4-team@strategicnetwork.org>",
)
# RFC 5965's example abuse report (its spam's Message-ID without angle brackets, as there).
COMPLAINT = Sample(
    "arf_rfc5965.txt", "somespammer@example.net", "user@example.com", "8787KJKJ3K4J3K4J3K4J3.mail@example.net"
)
