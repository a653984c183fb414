"""Many chat requests through any LLMClient with bounded concurrency, as they finish or in input order."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Iterable, Iterator

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
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm") as pool:
        pending: dict[Future, int] = {}
        try:
            for index, request in requests:
                pending[pool.submit(_call, client, request)] = index
                if len(pending) >= concurrency:
                    yield from _drain(pending, return_exceptions, FIRST_COMPLETED)
            while pending:
                yield from _drain(pending, return_exceptions, FIRST_COMPLETED)
        finally:  # an error or a caller that stops early: don't start what is still queued
            for future in pending:
                future.cancel()


def _drain(pending: dict, return_exceptions: bool, when) -> Iterator[tuple[int, ChatResult | Exception]]:
    done, _ = wait(pending, return_when=when)
    for future in done:
        index = pending.pop(future)
        exc = future.exception()
        if exc is not None and not return_exceptions:
            raise exc
        yield index, exc if exc is not None else future.result()


def map_chat(client: LLMClient, requests: Iterable, concurrency: int = 1,
             return_exceptions: bool = False) -> list[ChatResult | Exception]:
    """Results of all requests in input order (see iter_chat for concurrency and errors)."""
    requests = list(requests)
    results: list = [None] * len(requests)
    for index, result in iter_chat(client, requests, concurrency, return_exceptions):
        results[index] = result
    return results
