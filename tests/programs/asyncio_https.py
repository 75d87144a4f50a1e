#!/usr/bin/env python3
"""An asyncio HTTPS client: Python's asyncio drives OpenSSL through memory
BIOs (ssl.MemoryBIO / SSLObject), so no syscall happens inside SSL calls.
Makes COUNT keep-alive GET requests on one connection to an http_peer.py
server and checks each answer.

  asyncio_https.py PORT CAFILE COUNT
"""
import asyncio
import json
import ssl
import sys


async def main(port: int, cafile: str, count: int) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    reader, writer = await asyncio.open_connection("localhost", port, ssl=ctx)
    for i in range(count):
        writer.write(f"GET /aio{i} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
        body = await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert body == json.dumps({"path": f"/aio{i}"}).encode(), body
    writer.close()
    await writer.wait_closed()


asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
