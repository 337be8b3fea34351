"""engine.Ids: a set of UUIDs kept as bytes (the scoring engine's applied event ids)."""

import random
import uuid

from services.scoring.engine.engine import Ids


def test_holds_exactly_what_was_added():
    rng = random.Random(5)
    added = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(20_000)]
    others = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(20_000)]
    ids = Ids()
    for u in added:
        ids.add(u)
    ids.add(added[0])  # again: still one
    assert len(ids) == len(added)
    assert all(u in ids for u in added)
    assert not any(u in ids for u in others)


def test_an_id_whose_bytes_straddle_two_stored_ids_is_not_found():
    """Two ids in one bucket (same last two bytes) lie side by side; the 16 bytes from the middle of
    the first to the middle of the second make a third id of the same bucket, which was never added."""
    key = b"\x12\x34"
    first = bytes(range(14)) + key
    second = bytes(range(100, 106)) + key + bytes(range(200, 206)) + key
    straddling = first[8:] + second[:8]
    assert straddling[-2:] == key
    ids = Ids()
    ids.add(uuid.UUID(bytes=first))
    ids.add(uuid.UUID(bytes=second))
    assert uuid.UUID(bytes=straddling) not in ids
    ids.add(uuid.UUID(bytes=straddling))
    assert uuid.UUID(bytes=straddling) in ids and len(ids) == 3


def test_add_says_whether_the_id_was_new():
    ids, u = Ids(), uuid.uuid4()
    assert ids.add(u) is True and ids.add(u) is False and len(ids) == 1
