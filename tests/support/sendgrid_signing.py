"""SendGrid's signed event webhook with a key of the test's own: the key pair and the signature SendGrid sends."""

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def sendgrid_key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and its public half as SendGrid shows the verification key: base64 of the DER public key."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


def sendgrid_signature(private: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
