"""Response and item ids."""

from __future__ import annotations

import os
import time

_random = bytearray()


def new_id(prefix: str) -> str:
    """`resp_`, `msg_`, `rs_` + 50 hex digits, as OpenAI's current ids.

    The first 16 digits are the time in nanoseconds, so ids sort by creation and a store's
    indexes are appended to rather than written all over (several times faster inserts);
    the other 34 are from the OS's CSPRNG (136 bits: unguessable), read 4 KiB at a time,
    one system call per 235 ids instead of one per id.
    """
    global _random
    if len(_random) < 17:
        _random = bytearray(os.urandom(3995))
    chunk = _random[-17:]
    del _random[-17:]
    return f"{prefix}_{time.time_ns():016x}{chunk.hex()}"


def _forget_random() -> None:
    _random.clear()  # a forked child must never reuse its parent's bytes


os.register_at_fork(after_in_child=_forget_random)
