"""Names and label values derived from a Model's name, kept valid and unique when they must be cut.

A Model's name may be 253 characters (a DNS subdomain); a Job's name and every label value may be
63. Cutting alone makes different identities share one name (every attempt, then every
generation, of a long-named Model's conversion Job). As Kubernetes and KServe do, a cut name keeps
a readable prefix and ends with a short hash of the whole identity; a name that fits is kept as
it is, so objects named by an earlier operator are found again.
"""

from __future__ import annotations

import hashlib

DNS_LABEL_MAX = 63  # a DNS-1123 label, and a label value
FILE_NAME_MAX = 255  # one path component on Linux file systems (bytes; these names are ASCII)
_HASH_CHARS = 10  # 40 bits: a collision between two identities of one namespace is not a concern


def bounded(name: str, limit: int = DNS_LABEL_MAX) -> str:
    """`name` if it fits in `limit` characters, else its prefix, "-", and a hash of all of it.
    `name` must already be made of valid characters (it is built from a Model's DNS name)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
    # A name part and a label value must end alphanumeric: no "-" or "." before the hash's "-".
    return f"{name[:limit - _HASH_CHARS - 1].rstrip('-.')}-{digest}"
