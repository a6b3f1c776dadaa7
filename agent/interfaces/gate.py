"""`ModelGate`: every call that runs the model or the retriever in the server goes through one thread.

Why one worker thread: the model is not thread-safe and the CPU has few cores, so a server runs model work
on one thread behind a bounded queue, with an immediate 429 with `Retry-After` when the queue is full, so
overload never piles up unbounded work. All of torch's work belongs on that thread, start-up included
(`call`; why: `server.serving_app`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from reasonrec.agent.interfaces.http_errors import ServerBusyError
from reasonrec.errors import ConfigError

T = TypeVar("T")


class ModelGate:
    """Runs model work on one thread behind a bounded queue.

    Args:
        max_queue: jobs allowed to wait behind the running one; a job beyond that is refused at
            once with `ServerBusyError` (HTTP 429) instead of waiting unboundedly.
    """

    def __init__(self, max_queue: int):
        if not isinstance(max_queue, int) or max_queue < 0:
            raise ConfigError(f"`max_queue` must be an integer >= 0, got {max_queue!r}")
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reasonrec-model")
        self._pending = 0  # only touched on the event loop's thread, so no lock is needed
        self._service_s = 1.0  # moving average of one job's run time, for Retry-After

    @property
    def capacity(self) -> int:
        return self.max_queue + 1

    @property
    def pending(self) -> int:
        return self._pending

    def busy(self, held: int) -> ServerBusyError:
        """The one refusal wording (direct gate jobs and the batcher's requests say the same)."""
        wait = self.retry_after_s()
        return ServerBusyError(
            f"server busy: {held} requests are running or queued (max_queue={self.max_queue}, "
            f"capacity {self.capacity}); retry after {wait} s",
            retry_after_s=wait,
        )

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained by one slot (at least 1)."""
        return max(1, math.ceil(self._service_s))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the model thread.

        Raises:
            ServerBusyError: `capacity` jobs are already running or waiting.
        """
        if self._pending >= self.capacity:
            raise self.busy(self._pending)
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, functools.partial(self._timed, fn, *args, **kwargs)
            )
        finally:
            self._pending -= 1

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the model thread and wait for it, outside any event loop (start-up work:
        `serving_app` warms the agent up here, so all of torch's work runs on this one thread). Not counted
        in the queue nor in Retry-After's estimate."""
        return self._executor.submit(_on_model_thread, fn, *args, **kwargs).result()

    def _timed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        torch_threads_here()
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _on_model_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    torch_threads_here()
    return fn(*args, **kwargs)


def torch_threads_here() -> None:
    """Set torch's thread count again on the calling thread (nothing where torch is not loaded yet).

    Why: the OpenMP runtime keeps the thread count per calling thread, and a thread started after
    `model.num_threads` was applied (on the main thread, at load) would otherwise run with the runtime's
    default. Cheap when the count is unchanged, so every job of the model thread calls it. (It was added
    for a worker thread measured ~20 % slower than the main thread; that slowdown was the second OpenMP
    team, see `server.serving_app`, and the gain first credited to this call was within the noise.)
    """
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(torch.get_num_threads())
