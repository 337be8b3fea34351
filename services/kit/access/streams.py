"""Open streams per API key, in this process: a stream costs a database poll every
`stream_poll_ms` for as long as it lasts, while the rate limit counts only its connect.

Like the rate limiter's buckets, the counts are this process's own: behind a load balancer a key
may hold the limit in every API process.
"""

import threading


class OpenStreams:
    def __init__(self, max_per_key: int) -> None:
        self.max_per_key = max_per_key
        self._open: dict[str, int] = {}  # key id -> streams open
        self._lock = threading.Lock()

    def take(self, key_id: str) -> int | None:
        """Takes a place for one more stream of the key: None if taken, else how many it holds
        already (the limit or more: the caller refuses the stream)."""
        with self._lock:
            held = self._open.get(key_id, 0)
            if held >= self.max_per_key:
                return held
            self._open[key_id] = held + 1
        return None

    def give_back(self, key_id: str) -> None:
        with self._lock:
            held = self._open.get(key_id, 0) - 1
            if held > 0:
                self._open[key_id] = held
            else:
                self._open.pop(key_id, None)

    def held(self, key_id: str) -> int:
        return self._open.get(key_id, 0)

    def total(self) -> int:
        """Streams open in this process, every key's."""
        with self._lock:
            return sum(self._open.values())
