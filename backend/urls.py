"""URLs as they may be shown: never with a password."""

from __future__ import annotations


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, ``status`` and errors)."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    authority, slash, path = rest.partition("/")
    user, _, host = authority.rpartition("@")
    if ":" in user:
        user = user.split(":", 1)[0] + ":***"
    return f"{head}://{user}@{host}{slash}{path}"
