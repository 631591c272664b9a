"""Unsubscribe links spoiled in the ways a hostile or broken client spoils them."""


def mangled(genuine: str) -> dict[str, str]:
    """Links with a part oversized or malformed, by what is wrong with them."""
    workspace_id, contact_id, signature = genuine.split(".")
    return {
        "workspace id past 64 bits": f"{'9' * 30}.{contact_id}.{signature}",
        "workspace id past int()'s digits": f"{'9' * 5000}.{contact_id}.{signature}",
        "workspace id a digit only to isdigit": f"\u00b2.{contact_id}.{signature}",
        "workspace id negative": f"-{workspace_id}.{contact_id}.{signature}",
        "contact id past its column": f"{workspace_id}.{'c' * 10_000}.{signature}",
        "contact id with a NUL": f"{workspace_id}.{contact_id}\x00.{signature}",
        "signature not ASCII": f"{workspace_id}.{contact_id}.{chr(0xE9) * 32}",
        "signature not hex": f"{workspace_id}.{contact_id}.{'!' * 32}",
        "signature oversized": f"{workspace_id}.{contact_id}.{signature * 1000}",
        "only dots": "." * 10_000,
        "very long": "x" * 100_000,
    }
