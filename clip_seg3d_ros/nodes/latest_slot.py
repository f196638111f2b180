"""A one-item hand-over between threads that keeps only the newest item: the node's input queue.

A LiDAR publishes at a fixed rate whether or not the segmenter keeps up. A queue would grow (memory) and
the output would lag further and further behind the world; a robot wants the newest sweep labelled, so a
sweep that arrives while another waits replaces it, and the replaced one is counted as dropped.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Item = TypeVar("Item")


class LatestSlot(Generic[Item]):
    """Producer: :meth:`put` (never blocks). Consumer: :meth:`take` (blocks until an item or :meth:`close`)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Item | None = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: Item) -> bool:
        """Offer ``item``; True if it replaced one that was never taken (that one is dropped and counted)."""
        with self._condition:
            if self._closed:
                return False
            replaced = self._full
            if replaced:
                self.dropped += 1
            self._item, self._full = item, True
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Item | None:
        """The newest item (removing it); None after ``timeout`` seconds without one, or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full or self._closed:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake the consumer for good: :meth:`take` returns None from now on, :meth:`put` ignores items."""
        with self._condition:
            self._closed = True
            self._item, self._full = None, False
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
