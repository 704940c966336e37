"""A TCP proxy in front of moto that the rush's outage drill takes down and brings back.

`python bench/rush_proxy.py LISTEN_PORT TARGET_PORT` forwards every connection on 127.0.0.1.
SIGUSR1: open connections are cut and new ones refused (the listening socket closes), as when
the endpoint is unreachable; SIGUSR2: back. moto keeps its state: queued messages survive.
"""

import asyncio
import contextlib
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


async def main(listen: int, target: int) -> None:
    writers: set[asyncio.StreamWriter] = set()
    server: asyncio.Server | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.transport.abort()
            return
        writers.update((writer, up_writer))
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                writers.discard(w)
                w.transport.abort()

    async def up() -> None:
        nonlocal server
        server = server or await asyncio.start_server(
            handle, "127.0.0.1", listen, reuse_address=True, backlog=512
        )
        print(f"proxy up: {listen} -> {target}", flush=True)

    def down() -> None:
        nonlocal server
        if server is not None:
            server.close()
            server = None
        for writer in writers:
            writer.transport.abort()
        writers.clear()
        print("proxy down: connections cut, new ones refused", flush=True)

    await up()
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, down)
    loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(up()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    down()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
