"""kit.heap.deferred: no collection inside the block, the youngest generation collected after it."""

import gc

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
