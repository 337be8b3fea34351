"""kit.heap.deferred: no collection inside the block, the youngest generation collected after it;
kit.heap.release: a full collection and the C allocator's free memory back to the system."""

import gc
import os
import weakref

import pytest

from services.kit import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_garbage_in_cycles_waits_for_the_end_of_the_block_and_goes_then():
    gc.collect()
    collections: list[int] = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        with heap.deferred():
            assert not gc.isenabled()
            for _ in range(200_000):  # far past any threshold: no collection is made here
                Node()
            assert collections == []
            held = gc.get_count()[0]
        assert gc.isenabled()
        assert collections == [0]  # one of the youngest generation, at the end
        assert gc.get_count()[0] < held
        assert not any(isinstance(o, Node) for o in gc.get_objects(generation=1))  # freed, not promoted
    finally:
        gc.callbacks.remove(count)


def test_a_block_inside_another_leaves_the_collection_to_the_outer_one():
    with heap.deferred():
        with heap.deferred():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_is_back_on_after_an_error():
    try:
        with heap.deferred():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()


def resident_bytes() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(heap._TRIM is None or not os.path.exists("/proc/self/statm"),
                    reason="release() trims through glibc's malloc_trim and this reads /proc: Linux with glibc only")
def test_release_gives_freed_fragments_back_to_the_system():
    blocks = [bytearray(4000) for _ in range(20_000)]  # 80 MB from the C allocator (over pymalloc's 512 bytes)
    for b in blocks:
        b[::512] = b"x" * len(b[::512])  # touched: resident
    kept = blocks[::16]  # one block in 16 stays: the heap cannot shrink from its top
    del blocks
    gc.collect()
    held = resident_bytes()
    heap.release()
    assert held - resident_bytes() > 40_000_000  # most of the freed 75 MB is back with the system
    assert len(kept) == 1250


def test_release_collects_garbage_in_cycles_of_every_generation():
    node = Node()
    gone = weakref.ref(node)
    gc.collect()  # the cycle survives into the oldest generation while referenced
    del node
    assert gone() is not None  # only a full collection finds it now
    heap.release()
    assert gone() is None
