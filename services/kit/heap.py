"""The garbage collector's pace for worker processes.

With the default thresholds (a collection every 700 net allocations) a worker spends much of its
time in the collector: every poll allocates tens of thousands of short-lived objects (parsed
records, SQL parameters), and the engine's long-lived state is walked again by each older-
generation pass. Measured on the scoring worker (100,000 events in process, SQLite): 7.0 s of
CPU with the defaults, 4.1 s with `tune()`. Reference counting still frees almost everything at
once; only garbage in reference cycles waits a little longer for its collection.
"""

import ctypes
import ctypes.util
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 100)


def tune() -> None:
    """Collect the youngest generation every 50,000 net allocations (not 700), and the older ones
    proportionally less often. For worker processes (`kit.consumer.run_worker` calls it)."""
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def deferred() -> Iterator[None]:
    """No collection during the block, one of the youngest generation after it.

    For a unit of work that allocates much and keeps little (a poll's events parsed, applied and
    turned into rows): a collection in the middle of it walks everything it still holds, and
    moves it to an older generation to be walked again, though nearly all of it is freed by
    reference counting at the end. After the block, what the block dropped is gone and the
    collection walks only what it kept. Measured on the scoring worker (50,000 national events
    in process, SQLite): the collector's share 3.6-6.3 µs an event → 0.3-0.4.

    A block this wraps must be bounded (its garbage in reference cycles waits for its end).
    """
    if not gc.isenabled():  # a caller up the stack defers already (or the collector is off)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # glibc's; musl and macOS have none
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release() -> None:
    """After dropping a large structure (an engine of a million events): collect it, and give the
    C allocator's free memory back to the system (glibc's `malloc_trim`), so that the structure
    built next does not come on top of the old one's fragments. On the scoring worker at a million
    events (docs/performance.md, peak memory): RSS 298 → 256 MB as its engine went, and the next
    engine peaked 5 MB above the first instead of 27. A full collection: for rare moments only."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


__all__ = ["THRESHOLDS", "deferred", "release", "tune"]
