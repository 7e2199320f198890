"""Signed tokens of the opt-out links in emails: they work without logging in, name what to stop
(``key``: its id's name in the token) and for whom, and read as None once tampered with.

Each kind of email has its salt; the payload's format is kept, so links already sent work on.
"""

from django.core import signing


def optout_token(*, salt: str, key: str, target_id: int, user_id: int) -> str:
    return signing.dumps({key: target_id, "u": user_id}, salt=salt, compress=True)


def optout_token_read(*, salt: str, key: str, token: str) -> tuple[int, int] | None:
    """(target id, user id) from a token, or None when it was tampered with."""
    try:
        data = signing.loads(token, salt=salt)
        return int(data[key]), int(data["u"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None
