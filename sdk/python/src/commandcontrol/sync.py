"""Workbench: a synchronous facade over AsyncWorkbench. It runs a private
event loop on a thread; every method blocks until the async one returns.
Methods the async class grows (P2's control and sessions API) are mirrored
automatically: any coroutine method is wrapped, any async generator method
becomes a blocking iterator."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, AsyncIterator, Callable, Coroutine, Iterator, Optional, TypeVar, Union

from .client import DEFAULT_NAME, DEFAULT_TIMEOUT, AsyncWorkbench, Where
from .types import CallResult, PresenceEvent, PresenceSnapshot, Reply, Server

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="commandcontrol-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self.loop.is_closed():
                try:
                    self.run(aclose())
                except Exception:
                    pass

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Workbench:
    """The synchronous workbench: ``with Workbench.connect(url, key_file=...) as wb:``."""

    def __init__(self, aw: AsyncWorkbench, loop: _Loop) -> None:
        self._aw = aw
        self._loop = loop
        self.key = aw.key

    @classmethod
    def connect(cls, server: str, key_file: Optional[str] = None, seed: Optional[Union[bytes, str]] = None,
                tls_ca: Optional[str] = None, allow_plaintext: bool = False, name: str = DEFAULT_NAME,
                connect_timeout: float = DEFAULT_TIMEOUT, async_class: type[AsyncWorkbench] = AsyncWorkbench,
                **nats_options: Any) -> "Workbench":
        loop = _Loop()
        try:
            aw = loop.run(async_class.connect(server, key_file=key_file, seed=seed, tls_ca=tls_ca,
                                              allow_plaintext=allow_plaintext, name=name,
                                              connect_timeout=connect_timeout, **nats_options))
        except BaseException:
            loop.stop()
            raise
        return cls(aw, loop)

    @property
    def async_workbench(self) -> AsyncWorkbench:
        return self._aw

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._aw.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> "Workbench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Explicit wrappers for the core API (typed).
    def request_control(self, op: str, body: Any = b"", timeout: float = DEFAULT_TIMEOUT) -> bytes:
        return self._loop.run(self._aw.request_control(op, body, timeout))

    def snapshot(self, timeout: float = DEFAULT_TIMEOUT) -> PresenceSnapshot:
        return self._loop.run(self._aw.snapshot(timeout))

    def servers(self, where: Where = None) -> list[Server]:
        return self._loop.run(self._aw.servers(where))

    def watch(self) -> Iterator[PresenceEvent]:
        return self._loop.iterate(self._aw.watch())

    def call(self, fn: str, args: Optional[dict[str, Any]] = None, **kw: Any) -> CallResult:
        return self._loop.run(self._aw.call(fn, args, **kw))

    def stream(self, fn: str, args: Optional[dict[str, Any]] = None, **kw: Any) -> Iterator[Reply]:
        return self._loop.iterate(self._aw.stream(fn, args, **kw))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Mirror every other public method of the async workbench.
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._aw, name)
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **k: self._loop.iterate(attr(*a, **k))
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._loop.run(attr(*a, **k))
        return attr  # type: ignore[no-any-return]
