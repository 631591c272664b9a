"""The providers' own signatures over their webhooks: Mailgun's HMAC, SendGrid's ECDSA. Kept apart from the wire
models, with nothing of the database, so the settings can check a configured key when they are read."""

import base64
import binascii
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key


def mailgun_signed(signing_key: str, *, timestamp: str, token: str, signature: str) -> bool:
    """Whether Mailgun made `signature` (hex HMAC-SHA256 of timestamp and token) with the webhook signing key."""
    expected = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The Signed Event Webhook's verification key: as SendGrid shows it (base64 of the DER public key), or PEM."""
    try:
        key = (
            load_pem_public_key(text.encode())
            if text.lstrip().startswith("-----BEGIN")
            else load_der_public_key(base64.b64decode(text.strip(), validate=True))
        )
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"not a public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve (ECDSA) public key")
    return key


def sendgrid_signed(key: ec.EllipticCurvePublicKey, *, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether SendGrid signed the timestamp header and the raw body (ECDSA, SHA-256) with the key's private half."""
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
