"""Protocol version, separate from the package version.

Bump the minor for additive changes (new kinds, new fields with defaults); bump the major
when an old peer could misread a message. Peers refuse a different major.
"""

PROTOCOL_VERSION = "1.0"
PROTOCOL_MAJOR = int(PROTOCOL_VERSION.split(".", 1)[0])


def compatible(version: str) -> bool:
    """True when a peer speaking ``version`` can be understood."""
    major, _, _ = version.partition(".")
    return major.isdigit() and int(major) == PROTOCOL_MAJOR
