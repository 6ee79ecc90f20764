"""One model, one device, one worker thread: model work runs in arrival order from a bounded queue.

The HTTP handlers are asynchronous; everything that touches the model (decode, encode, prefill, generate) is a
`Job` run by `DeviceWorker` on its own thread, one at a time, first come first served. A full queue refuses at
once (`QueueFull`, HTTP 429 with ``Retry-After``) rather than letting requests pile up. A job is cancelled when its
client goes away: a job still waiting is dropped, a running one stops at its next check (a decoded frame, a prefill
chunk, a generated token).

    worker = DeviceWorker(max_waiting=16); worker.start()
    result = await worker.run(lambda job: model_work(job), loop)
"""

from __future__ import annotations

import asyncio
import collections
import queue
import statistics
import threading
import time


class QueueFull(Exception):
    """The device queue holds ``max_waiting`` jobs already."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy: {retry_after} s of queued work; retry later")
        self.retry_after = retry_after


class Cancelled(Exception):
    """The job's client went away (or the server is shutting down)."""


DONE = object()  # the end of a job's event stream


class Job:
    """A unit of model work: ``fn(job)`` runs on the worker thread; ``events`` carries what it emits to the loop."""

    def __init__(self, fn, loop: asyncio.AbstractEventLoop, *, events: bool = False):
        self.fn, self.loop = fn, loop
        self.future = loop.create_future()
        self.events: asyncio.Queue | None = asyncio.Queue() if events else None
        self.cancelled = threading.Event()
        self.submitted, self.started = time.perf_counter(), None  # when it was queued; when the worker took it

    def check(self) -> None:
        """Raise `Cancelled` if the client went away: called by the work between its steps."""
        if self.cancelled.is_set():
            raise Cancelled()

    def emit(self, item) -> None:
        """Hand ``item`` to the request's stream (from the worker thread)."""
        if self.events is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def cancel(self) -> None:
        self.cancelled.set()

    def _resolve(self, result=None, error: BaseException | None = None) -> None:
        """Settle the future and end the event stream (after everything emitted before), whether the job ran or
        was dropped, so a streaming response never waits forever."""
        def done():
            if not self.future.done():
                if error is not None:
                    self.future.set_exception(error)
                else:
                    self.future.set_result(result)
            if self.events is not None:
                self.events.put_nowait(DONE)
        self.loop.call_soon_threadsafe(done)


class DeviceWorker:
    """Runs jobs one at a time on a thread, in arrival order; at most ``max_waiting`` wait behind the running one."""

    def __init__(self, max_waiting: int = 16):
        self.queue: queue.Queue = queue.Queue(maxsize=max_waiting)
        self.thread = threading.Thread(target=self._run, name="longvid-device", daemon=True)
        self.running: Job | None = None
        self.recent = collections.deque(maxlen=32)  # seconds of recent jobs, for Retry-After
        self.completed = 0  # jobs that ran (answered or failed)
        self.cancelled = 0  # jobs whose client went away: dropped from the queue, or stopped while running
        self.stopping = False

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> Job:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            if not self._drop_cancelled():
                raise QueueFull(self.retry_after()) from None
            self.queue.put_nowait(job)
        return job

    def _drop_cancelled(self) -> int:
        """Free the places of waiting jobs whose clients went away (so they do not cause 429s); how many."""
        with self.queue.mutex:
            waiting = list(self.queue.queue)
            gone = [j for j in waiting if j is not None and j.cancelled.is_set()]
            if gone:
                self.queue.queue.clear()
                self.queue.queue.extend(j for j in waiting if j is None or not j.cancelled.is_set())
                self.queue.not_full.notify(len(gone))
        for job in gone:
            self.cancelled += 1
            job._resolve(error=Cancelled())
        return len(gone)

    async def run(self, fn, loop: asyncio.AbstractEventLoop | None = None):
        """Submit ``fn`` and wait for its result; cancelling the awaiting task cancels the job."""
        job = self.submit(Job(fn, loop or asyncio.get_running_loop()))
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            job.cancel()
            raise

    def retry_after(self) -> int:
        """Seconds until a new job would likely start: queued jobs times the median recent job time (>= 1)."""
        per_job = statistics.median(self.recent) if self.recent else 1.0
        return max(1, round(per_job * (self.queue.qsize() + 1)))

    @property
    def waiting(self) -> int:
        return self.queue.qsize()

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.stopping:
                job.cancel()
            if job.cancelled.is_set():
                self.cancelled += 1
                job._resolve(error=Cancelled())
                continue
            self.running = job
            t0 = job.started = time.perf_counter()
            try:
                result = job.fn(job)
            except BaseException as err:  # handed to the request, which turns it into a response
                if isinstance(err, Cancelled):
                    self.cancelled += 1
                else:
                    self.completed += 1
                job._resolve(error=err)
            else:
                self.completed += 1
                job._resolve(result)
            finally:
                self.recent.append(time.perf_counter() - t0)
                self.running = None

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what waits, let the running job stop at its next check (it is cancelled too), end the thread."""
        self.stopping = True  # a job the thread has just taken off the queue is cancelled too
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                job._resolve(error=Cancelled())
        if self.running is not None:
            self.running.cancel()
        self.queue.put(None)
        self.thread.join(timeout)
