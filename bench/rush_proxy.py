"""A TCP proxy in front of the AWS endpoint that the rush can take down and bring back.

`python bench/rush_proxy.py --listen 4801 --target 127.0.0.1:4800` forwards every connection.
SIGUSR1 takes the endpoint down: open connections are cut and new ones refused (the listening
socket is closed), as when the endpoint is unreachable. SIGUSR2 brings it back. The endpoint
behind it keeps its state, so queued messages survive the outage.
"""

import argparse
import asyncio
import contextlib
import signal


class Proxy:
    def __init__(self, listen: int, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.listen, self.target = listen, (host, int(port))
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.listen, reuse_address=True, backlog=512
            )
            print(f"proxy up 127.0.0.1:{self.listen} -> {self.target}", flush=True)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()
            print("proxy down: connections cut, new ones refused", flush=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.writers -= {writer, up_writer}
            for w in (writer, up_writer):
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    args = parser.parse_args()
    proxy, stop = Proxy(args.listen, args.target), asyncio.Event()
    await proxy.up()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(proxy.down()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(proxy.up()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.down()


if __name__ == "__main__":
    asyncio.run(main())
