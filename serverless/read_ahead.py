"""Reading inputs ahead of the models, in order, with a bound on what is read ahead.

The one owner of the look-ahead loop that both bulk doors use: ``autolabel prelabel`` decodes
files in worker processes (`serverless.pipeline.prelabel_files`), ``autolabel cvat prelabel``
downloads and decodes CVAT frames in threads (`sync.cvat_prelabel`). The caller owns the
executor (process or thread pool) and its shutdown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Executor, Future
from itertools import islice
from typing import TypeVar

__all__ = ["read_ahead"]

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(
    items: Iterable[T], read: Callable[[T], R], executor: Executor | None, look_ahead: int
) -> Generator[tuple[T, R], None, None]:
    """``(item, read(item))`` for each item, in the items' order.

    Without an executor each item is read when it is asked for. With one, ``read`` runs in it
    with at most ``look_ahead`` items (at least 1) submitted beyond the one being yielded, so
    memory stays bounded however long the input. An exception of ``read`` is raised when its
    item's turn comes. Closing the generator early leaves the submitted reads to the executor
    (a caller that stops early shuts it down with ``cancel_futures=True``)."""
    if executor is None:
        for item in items:
            yield item, read(item)
        return
    waiting = iter(items)
    ahead: deque[tuple[T, Future[R]]] = deque(
        (item, executor.submit(read, item)) for item in islice(waiting, max(1, look_ahead))
    )
    while ahead:
        item, future = ahead.popleft()
        for following in islice(waiting, 1):
            ahead.append((following, executor.submit(read, following)))
        yield item, future.result()
