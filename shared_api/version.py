"""Protocol version, separate from the package version.

Bump the minor for additive changes (new kinds, new fields with defaults); bump the major
when an old peer could misread a message. Peers refuse a different major.
"""

PROTOCOL_VERSION = "1.0"
PROTOCOL_MAJOR = int(PROTOCOL_VERSION.split(".", 1)[0])


def compatible(version: str) -> bool:
    """True when a peer speaking ``version`` can be understood. Never raises: any string
    that is not ASCII digits, a dot and more (e.g. "².0", whose "²" ``isdigit``) is not."""
    major, _, _ = version.partition(".")
    return major.isascii() and major.isdigit() and int(major) == PROTOCOL_MAJOR
