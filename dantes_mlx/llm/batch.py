"""Many chat requests through any LLMClient with bounded concurrency, as they finish or in input order."""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

from dantes_mlx.errors import DantesError
from dantes_mlx.llm.base import ChatResult, LLMClient

# A request is {"messages": [...], "json_schema": {...} or absent, **sampling}, or a bare message list.
ChatRequest = dict


def _call(client: LLMClient, request) -> ChatResult:
    if isinstance(request, list):
        return client.chat(request)
    options = dict(request)
    messages = options.pop("messages")
    return client.chat(messages, json_schema=options.pop("json_schema", None), **options)


def iter_chat(client: LLMClient, requests: Iterable, concurrency: int = 1,
              return_exceptions: bool = False) -> Iterator[tuple[int, ChatResult | Exception]]:
    """Yield (input index, result) as each request finishes, at most `concurrency` in flight.

    With return_exceptions=False the first failure is raised (requests not yet started are dropped);
    with True it is yielded in place of the result, so a stage can reject that item and go on.
    """
    requests = iter(enumerate(requests))
    concurrency = max(1, int(concurrency))
    if concurrency == 1:  # in-process models serialise anyway: no thread needed
        for index, request in requests:
            try:
                yield index, _call(client, request)
            except Exception as exc:
                if not return_exceptions:
                    raise
                yield index, exc
        return
    yield from _threaded(client, requests, concurrency, return_exceptions)


def _threaded(client: LLMClient, requests, concurrency: int, return_exceptions: bool):
    """iter_chat's `concurrency` > 1: daemon worker threads, so Ctrl-C or an early stop never waits for the
    requests still in flight (up to llm.timeout each); their late answers are dropped."""
    work: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()
    workers = [threading.Thread(target=_worker, args=(client, work, done), name=f"llm-{n}", daemon=True)
               for n in range(concurrency)]
    for worker in workers:
        worker.start()
    in_flight = 0
    try:
        for item in requests:
            work.put(item)
            in_flight += 1
            if in_flight >= concurrency:
                in_flight -= 1
                yield _finished(done, return_exceptions)
        while in_flight:
            in_flight -= 1
            yield _finished(done, return_exceptions)
    finally:  # an error, Ctrl-C or a caller that stops early: workers quit after their current request
        for _ in workers:
            work.put(None)


def _worker(client: LLMClient, work: queue.SimpleQueue, done: queue.SimpleQueue) -> None:
    while (item := work.get()) is not None:
        index, request = item
        try:
            done.put((index, _call(client, request), None))
        except Exception as exc:  # handed to the caller, who raises or yields it
            done.put((index, None, exc))


def _finished(done: queue.SimpleQueue, return_exceptions: bool) -> tuple[int, ChatResult | Exception]:
    while True:  # short waits: a Ctrl-C that lands on a worker thread is still seen here at once
        try:
            index, result, exc = done.get(timeout=0.2)
            break
        except queue.Empty:
            continue
    if exc is not None and not return_exceptions:
        raise exc
    return index, exc if exc is not None else result


class FailureLimit:
    """Watches a stream of (index, result or exception): counts the failures, keeps the first error, and ends the
    stream after `limit` failures in a row (a server that is down, not one bad item)."""

    def __init__(self, limit: int = 5):
        self.limit = max(1, int(limit))
        self.failed = self.in_a_row = 0
        self.first_error = ""
        self.stopped = False

    def watch(self, results: Iterable) -> Iterator:
        try:
            for index, result in results:
                if isinstance(result, Exception):
                    self.failed += 1
                    self.in_a_row += 1
                    self.first_error = self.first_error or describe_error(result)
                else:
                    self.in_a_row = 0
                yield index, result
                if self.in_a_row >= self.limit:
                    self.stopped = True
                    return
        finally:
            close = getattr(results, "close", None)
            if close is not None:  # stops the worker threads of a threaded stream at once
                close()

    def note(self, unit: str, total: int, failed: int | None = None) -> str:
        """'3 of 40 chunks failed; stopped after 5 failures in a row: <first error>'. `failed` counts the items
        never sent after an early stop too (default: the failures seen)."""
        stop = f"; stopped after {self.limit} failures in a row" if self.stopped else ""
        return f"{self.failed if failed is None else failed} of {total} {unit}s failed{stop}: {self.first_error}"


def describe_error(exc: BaseException) -> str:
    """An error on one line: ours as they read, their fix in brackets; others with their type."""
    if not isinstance(exc, DantesError):
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    text = " ".join(str(exc.message).split("\n  fix: ")[0].split())
    return f"{text} (fix: {exc.fix})" if exc.fix else text


def map_chat(client: LLMClient, requests: Iterable, concurrency: int = 1,
             return_exceptions: bool = False) -> list[ChatResult | Exception]:
    """Results of all requests in input order (see iter_chat for concurrency and errors)."""
    requests = list(requests)
    results: list = [None] * len(requests)
    for index, result in iter_chat(client, requests, concurrency, return_exceptions):
        results[index] = result
    return results
