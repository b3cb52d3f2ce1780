#!/usr/bin/env python3
"""A TCP proxy that can be cut: the object-store outage of the resilience rig.

    tcpproxy.py LISTEN_PORT TARGET_HOST TARGET_PORT

SIGUSR1 cuts: the listening socket closes (new connections are refused) and every
open connection is reset. SIGUSR2 restores. Prints "ready" once listening.
"""
import asyncio
import signal
import socket
import sys


async def main() -> None:
    listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    conns: set[asyncio.StreamWriter] = set()
    state: dict = {"server": None}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        conns.add(writer)
        conns.add(up_writer)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            conns.discard(writer)
            conns.discard(up_writer)

    async def start() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", listen_port))
        state["server"] = await asyncio.start_server(handle, sock=sock, backlog=512)

    def cut() -> None:
        if state["server"] is not None:
            state["server"].close()
            state["server"] = None
        for w in list(conns):
            w.transport.abort()
        conns.clear()
        print("cut", flush=True)

    def restore() -> None:
        if state["server"] is None:
            asyncio.ensure_future(start())
        print("restored", flush=True)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, cut)
    loop.add_signal_handler(signal.SIGUSR2, restore)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await start()
    print("ready", flush=True)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
