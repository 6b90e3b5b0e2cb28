"""A TCP proxy a test can cut, blackhole and restore, to take a dependency (the broker, PostgreSQL) away from a
service process; with several upstreams, a round-robin load balancer in front of replicas."""

from __future__ import annotations

import asyncio
import contextlib


class LinkProxy:
    """Forwards 127.0.0.1:<port> to an upstream host and port until `cut()`; `restore()` lets it through again.

    While cut, every open connection is closed at once and new ones are closed as soon as they are accepted,
    so the client sees the dependency go away (not a silent hang).

    While blackholed (`blackhole()`), nothing moves and nothing is closed: open connections stay open, silent,
    in both directions, and new ones are accepted but never reach the upstream, as when a network path drops
    every packet. What was sent meanwhile is held, not lost, and goes on after `restore()`, as TCP would
    retransmit it once the path is back (by then the client has usually given the connection up).
    """

    def __init__(self, upstream_host: str, upstream_port: int, *more_upstream_ports: int) -> None:
        # Several ports: each connection goes to the next, skipping one that refuses (a load balancer's health check).
        self._upstreams = [(upstream_host, port) for port in (upstream_port, *more_upstream_ports)]
        self._turn = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.cut_off = False
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def blackhole(self) -> None:
        """Drop the path silently: no byte moves either way until `restore()`, and no connection closes."""
        self._flowing.clear()

    def restore(self) -> None:
        self.cut_off = False
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        await self._flowing.wait()  # a blackholed path: the connection is accepted, and nothing answers
        for _ in self._upstreams:
            upstream = self._upstreams[self._turn % len(self._upstreams)]
            self._turn += 1
            try:
                up_reader, up_writer = await asyncio.open_connection(*upstream)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()  # held while blackholed, as the network would
                if self.cut_off:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(sink)
            sink.close()
            with contextlib.suppress(Exception):
                await sink.wait_closed()
