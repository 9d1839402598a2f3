"""Trace and span identifiers: 32 and 16 lowercase hex digits, as in W3C trace context."""

from __future__ import annotations

import os
import random

# A private generator seeded from the OS: much cheaper per id than os.urandom, and
# reseeded in forked children so that parent and child never produce the same ids.
_rng = random.Random(os.urandom(32))


def _reseed() -> None:
    _rng.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_trace_id() -> str:
    value = _rng.getrandbits(128)
    while not value:
        value = _rng.getrandbits(128)
    return "%032x" % value


def new_span_id() -> str:
    value = _rng.getrandbits(64)
    while not value:
        value = _rng.getrandbits(64)
    return "%016x" % value
