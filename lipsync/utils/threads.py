"""Run one side of a producer/consumer pair in a background thread, with bounded queues.

Decoding and encoding (PyAV/x264 release the GIL) overlap with the generator this way; errors raised in
the thread are re-raised in the caller, so a failure is never swallowed.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BackgroundIterator(Generic[T]):
    """Iterate `source` in a thread, at most `max_ahead` items ahead of the consumer."""

    def __init__(self, source: Iterable[T], max_ahead: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True, name="lipsync-producer")
        self._thread.start()

    def _run(self, source: Iterable[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    break
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(_Failure(error))
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class BackgroundConsumer(Generic[T]):
    """Feed items to `consume` in a thread; `finish()` waits and re-raises the thread's error, if any."""

    def __init__(self, consume: Callable[[T], None], max_queued: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_queued))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(consume,), daemon=True, name="lipsync-consumer")
        self._thread.start()

    def _run(self, consume: Callable[[T], None]) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    consume(item)
                except BaseException as error:  # re-raised by put() or finish()
                    self._error = error

    def put(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def finish(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without re-raising (used while another error is already propagating)."""
        self._error = self._error or RuntimeError("abandoned")
        self._queue.put(_DONE)
        self._thread.join(timeout=10)
