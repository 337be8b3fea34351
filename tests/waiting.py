"""Waiting for something that happens in another thread or process (a worker, a relay)."""

import time


def wait_for(check, timeout: float = 60.0, what: str = "condition", every: float = 0.05):
    """Call `check` until it returns something truthy, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not met within {timeout}s")
