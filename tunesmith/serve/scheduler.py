"""Queue concurrent requests and decode them together in batches on one worker thread.

The engine is used by this one thread only. Requests wait in a bounded queue (a full queue is a 429 for the
caller); the worker takes up to `max_batch` of them at a time and decodes them as one left-padded batch.
A request whose client went away is dropped from the queue at once, or leaves its batch at the next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import AsyncIterator

from tunesmith.infer.settings import DecodeRequest, DecodeResult, GenerationSettings


class QueueFull(Exception):
    """No room for more waiting requests."""


class BatchScheduler:
    def __init__(self, engine, max_batch: int = 8, max_waiting: int = 64):
        self.engine = engine
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self._waiting: deque[tuple[DecodeRequest, "Submission"]] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._running: list[tuple[DecodeRequest, Submission]] = []  # the batch now decoding
        self._thread = threading.Thread(target=self._work, name="tunesmith-batcher", daemon=True)
        self._thread.start()

    def submit(self, submission: "Submission") -> None:
        with self._wake:
            if len(self._waiting) + len(submission.requests) > self.max_waiting:
                raise QueueFull()
            self._waiting.extend((request, submission) for request in submission.requests)
            self._wake.notify()

    def withdraw(self, submission: "Submission") -> None:
        """Forget the submission's requests that have not started; running ones stop at the next step."""
        with self._wake:
            self._waiting = deque(item for item in self._waiting if item[1] is not submission)
        for request in submission.requests:
            request.cancelled.set()

    def close(self) -> None:
        """Stop taking work and cut the running batch short, so shutdown does not wait for long replies."""
        with self._wake:
            self._closed = True
            for request, _ in self._running:
                request.cancelled.set()
            self._wake.notify()
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                self._running = self._take(self.max_batch)
            try:
                results = self.engine.run_batch([request for request, _ in self._running], admit=self._admit,
                                                max_rows=self.max_batch)
            except Exception as err:  # one bad batch must not stop the server: its callers get the error
                results = [err] * len(self._running)
            for (request, submission), outcome in zip(self._running, results):
                submission.deliver(request, outcome)

    def _admit(self, room: int) -> list[DecodeRequest]:
        """Waiting requests that join the running batch between two steps (called by the engine)."""
        with self._wake:
            if self._closed:
                return []
            joining = self._take(room)
            self._running += joining
        return [request for request, _ in joining]

    def _take(self, count: int) -> list[tuple[DecodeRequest, "Submission"]]:
        return [self._waiting.popleft() for _ in range(min(count, len(self._waiting)))]


class Submission:
    """The n choices of one API request, seen from the event loop: text pieces as they come, then results."""

    def __init__(self, choices: list[tuple[list[int], GenerationSettings]], pixels: dict | None = None):
        """`choices`: the prompt ids and settings of each choice, in the order the response lists them;
        `pixels`: the prompt's images, for a vision-language model."""
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()
        self.requests = [
            DecodeRequest(prompt_ids, settings, on_text=self._forward(index), on_done=self._forward(index),
                          pixels=pixels)
            for index, (prompt_ids, settings) in enumerate(choices)
        ]
        self._delivered: set[int] = set()

    def _forward(self, index: int):
        def put(event):
            if isinstance(event, DecodeResult):
                if index in self._delivered:
                    return
                self._delivered.add(index)
            self._loop.call_soon_threadsafe(self._events.put_nowait, (index, event))

        return put

    def deliver(self, request: DecodeRequest, outcome: DecodeResult | Exception) -> None:
        """The outcome of a choice, unless the engine already reported it through `on_done`."""
        index = next(i for i, candidate in enumerate(self.requests) if candidate is request)
        if isinstance(outcome, Exception):
            self._loop.call_soon_threadsafe(self._events.put_nowait, (index, outcome))
        else:
            self._forward(index)(outcome)

    async def events(self) -> AsyncIterator[tuple[int, str | DecodeResult]]:
        """(choice index, text piece) while decoding, then (choice index, DecodeResult) once per choice."""
        remaining = len(self.requests)
        while remaining:
            index, event = await self._events.get()
            if isinstance(event, Exception):
                raise event
            if isinstance(event, DecodeResult):
                remaining -= 1
            yield index, event

    async def results(self) -> list[DecodeResult]:
        results: list[DecodeResult | None] = [None] * len(self.requests)
        async for index, event in self.events():
            if isinstance(event, DecodeResult):
                results[index] = event
        return results
