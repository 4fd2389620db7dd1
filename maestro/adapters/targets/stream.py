"""An extract's files as a stream of load-format chunks, produced in a worker thread.

Reading the objects, converting to the canonical types and encoding block by block all happen
in one thread (Arrow releases the GIL for most of it); the event loop only forwards each chunk to
the target's connection. A queue of :data:`QUEUE_CHUNKS` applies back-pressure both ways: the
thread waits while the target is slower, and memory holds at most that many chunks (plus the
block being read), whatever the table's size. Closing the stream early (the target failed, or
had the export already) stops the thread at its next chunk.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from maestro.adapters.targets.encode import Dialect, encode
from maestro.adapters.targets.files import BLOCK_BYTES, read_batches
from maestro.adapters.targets.types import ExportColumn

QUEUE_CHUNKS = 2
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def load_chunks(
    storage: Any, files: Sequence[tuple[str, str, str]], columns: Sequence[ExportColumn], dialect: Dialect,
    *, on_rows: Callable[[int], None] = lambda n: None, block_bytes: int = BLOCK_BYTES,
) -> AsyncIterator[bytes]:
    """Chunks of ``files`` — (uri, format, compression) each — in order. ``on_rows(n)`` is called
    in the thread with each batch's row count before it is sent (to enforce a limit: raising
    there fails the stream)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
    stop = threading.Event()

    def put(item: Any) -> bool:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while True:
            try:
                future.result(timeout=0.2)
                return True
            except FutureTimeout:
                if stop.is_set():
                    future.cancel()
                    return False

    def produce() -> None:
        try:
            for uri, fmt, compression in files:
                for batch in read_batches(storage, uri, fmt, compression, columns, block_bytes=block_bytes):
                    if stop.is_set():
                        return
                    on_rows(batch.num_rows)
                    data = encode(batch, columns, dialect)
                    if data.size and not put(data):
                        return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failed(exc))

    worker = threading.Thread(target=produce, name="db-export-read", daemon=True)
    worker.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield memoryview(item)
    finally:
        stop.set()
        while not queue.empty():  # unblock a put waiting for room
            queue.get_nowait()
        await asyncio.to_thread(worker.join, 5)
