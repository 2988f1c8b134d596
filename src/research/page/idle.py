"""The page at rest costs the device nothing: no timers that poll, memory given back when idle.

A phone kept awake many times a second never reaches its deep sleep states. Gradio's queue polls
for work every millisecond (queueing.Queue.start_processing sleeps 1 ms when it has nothing to
do), its progress loop every 10 ms and its status loop every second, and uvicorn wakes ten times
a second to refresh its Date header: 3.8 CPU-seconds a minute and ~800 wake-ups a second with
nobody asking anything. Here the queue waits for an event instead (a request arrives, an answer
ends), the progress and status loops wait while there is nothing to report, and the server's
housekeeping runs once a second. What the queue does is unchanged: the same code decides which
event runs next, in the same order, with the same concurrency limits.
"""

from __future__ import annotations

import asyncio

from gradio.queueing import Queue
from uvicorn import Server


class QuietQueue(Queue):
    """Gradio's queue, woken by events instead of a 1 ms timer.

    Made from the page's own queue by switching its class (quiet(demo)), so every setting and
    all state stay Gradio's; only the three background loops wait differently.
    """

    def _wake_event(self) -> asyncio.Event:
        event = self.__dict__.get("_wake")
        if event is None:
            event = self.__dict__["_wake"] = asyncio.Event()
        return event

    def wake(self) -> None:
        self._wake_event().set()

    async def _sleep_until_woken(self, timeout: float | None = None) -> None:
        event = self._wake_event()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        event.clear()

    async def push(self, *args, **kwargs):
        try:
            return await super().push(*args, **kwargs)
        finally:
            self.wake()  # a new event may be run now

    async def process_events(self, *args, **kwargs):
        try:
            return await super().process_events(*args, **kwargs)
        finally:
            self.wake()  # a worker and a concurrency slot are free again

    async def start_processing(self) -> None:
        try:
            while not self.stopped:
                # Nothing queued, no free worker, or every queued event waits for a busy
                # concurrency slot: each of those changes only when push() or the end of
                # process_events() wakes us. The timeout is a safety net, not the mechanism.
                if len(self) == 0 or None not in self.active_jobs:
                    await self._sleep_until_woken(30)
                    continue
                async with self.delete_lock:
                    event_batch = self.get_events()
                if not event_batch:
                    await self._sleep_until_woken(30)
                    continue
                self._start(*event_batch)
        finally:
            self.stopped = True
            self._cancel_asyncio_tasks()

    def _start(self, events, batch, concurrency_id) -> None:
        """Run one batch of events: the body of Gradio's start_processing loop, unchanged."""
        import time

        from gradio.utils import run_coro_in_background, set_task_name

        self.active_jobs[self.active_jobs.index(None)] = events
        event_queue = self.event_queue_per_concurrency_id[concurrency_id]
        event_queue.current_concurrency += 1
        start_time = time.time()
        fn = events[0].fn
        event_queue.start_times_per_fn[fn].add(start_time)
        for event in events:
            if (a := self.event_analytics.get(event._id)) is not None:
                a["status"] = "processing"
        task = run_coro_in_background(self.process_events, events, batch, start_time, fn)
        set_task_name(task, events[0].session_hash, fn._id, events[0]._id, batch)
        self._asyncio_tasks.add(task)
        task.add_done_callback(self._asyncio_tasks.discard)
        if self.live_updates:
            self.broadcast_estimations(concurrency_id)

    async def start_progress_updates(self) -> None:
        """Progress goes out every 10 ms while something runs; at rest the loop waits."""
        while not self.stopped:
            events = [evt for job in self.active_jobs if job is not None for evt in job]
            if not events:
                await self._sleep_until_woken(30)
                continue
            for event in events:
                if event.progress_pending and event.progress:
                    event.progress_pending = False
                    self.send_message(event, event.progress)
            await asyncio.sleep(self.progress_update_sleep_when_free)

    async def notify_clients(self) -> None:
        """Queue positions go out every update interval while people wait; none wait at rest."""
        while not self.stopped:
            if len(self) == 0:
                await self._sleep_until_woken(30)
                continue
            await asyncio.sleep(self.update_intervals)
            for concurrency_id in self.event_queue_per_concurrency_id:
                self.broadcast_estimations(concurrency_id)


class QuietServer(Server):
    """uvicorn's server with its housekeeping (the Date header) once a second instead of ten
    times; a stop request (Ctrl-C, SIGTERM) still ends it at once."""

    TICK_S = 1.0

    def __init__(self, config, ready=None):
        super().__init__(config)
        self.ready = ready  # called once the page listens (the page prints its start-up times)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.ready is not None and not self.should_exit:
            self.ready()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    async def main_loop(self) -> None:
        self._stop = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # on_tick refreshes the Date header when % 10 == 0
            try:
                await asyncio.wait_for(self._stop.wait(), self.TICK_S)
            except asyncio.TimeoutError:
                pass
            should_exit = await self.on_tick(counter)


def quiet(demo) -> None:
    """Make a queued Blocks' queue event-driven (before the page starts serving)."""
    queue = demo._queue
    if type(queue) is Queue:  # only Gradio's own class: a subclass would lose its overrides
        queue.__class__ = QuietQueue


def on_android() -> bool:
    """Whether this is Android (Termux): there an idle app's memory is what the system takes
    back first, so the page unloads its model when idle by default."""
    import os
    import sys

    return (
        bool(os.environ.get("ANDROID_ROOT") or os.environ.get("TERMUX_VERSION")) or "com.termux" in sys.prefix
    )


#: The page's default idle time before it unloads the model: on Android 10 minutes, elsewhere never.
ANDROID_UNLOAD_AFTER_MIN = 10.0


def give_back_memory() -> None:
    """Return freed memory to the system: collect cycles, stop idle template workers and the ZIM
    search worker, and ask glibc to release its free heap (it keeps freed memory for reuse otherwise)."""
    import ctypes
    import gc

    from research.engine import templates as template_worker
    from research.library import zim as library_zim

    gc.collect()
    template_worker.stop_idle()
    library_zim.SEARCHER.close()  # the ZIM search worker and its cache; the next search starts another
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (Android's bionic, musl, macOS)
        pass
