"""Which version serves a request: weighted rendezvous hashing of a sticky key.

Each member scores `weight / -ln(h)` where `h` is a uniform hash of (key, version); the highest score wins. The
split follows the weights, a key always lands on the same version while the weights hold (and across
restarts: the hash is keyed, not salted per process), and raising one member's weight only moves keys onto it:
no user flips between two versions whose weights did not change."""

from __future__ import annotations

import hashlib
import math
import random

from serving.router.routes import Route

HASH_SPACE = float(1 << 64)


def unit_hash(key: str, version: str) -> float:
    """A uniform number in (0, 1) for the pair."""
    digest = hashlib.blake2b(f"{key}\x00{version}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / HASH_SPACE


def choose_version(route: Route, key: str | None) -> str:
    """The member for `key` (sticky), or a weighted random member when there is no key."""
    if key is None:
        members = [m for m in route.members if m.weight > 0]
        return random.choices([m.version for m in members], weights=[m.weight for m in members])[0]
    best_version, best_score = route.members[0].version, -math.inf
    for member in route.members:
        if member.weight <= 0:
            continue
        score = member.weight / -math.log(unit_hash(key, member.version))
        if score > best_score:
            best_version, best_score = member.version, score
    return best_version
