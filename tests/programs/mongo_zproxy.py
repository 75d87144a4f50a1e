#!/usr/bin/env python3
"""OP_COMPRESSED in front of FerretDB, which does not speak it (FerretDB 1.x
answers it with "unhandled OpCode"): listens on 127.0.0.1:PORT and relays
each connection to 127.0.0.1:UPSTREAM, offering the compressors the client's
hello asks for (zlib, zstd, snappy) in the hello reply, inflating the
client's compressed messages for FerretDB and compressing each reply with the
compressor its request came in, as mongod does. The client side is a real
driver negotiating and compressing for real; only the server's half of the
compression is this program. Appends {"client": "ip:port", "upstream":
"ip:port"} per connection to LEGS (JSON lines)."""
import json
import socket
import struct
import sys
import threading
import zlib

import bson
import snappy
from backports import zstd

OP_REPLY, OP_QUERY, OP_COMPRESSED, OP_MSG = 1, 2004, 2012, 2013
IDS = {"snappy": 1, "zlib": 2, "zstd": 3}
port, upstream, legs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def read_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError
        b += chunk
    return b


def read_message(s):
    head = read_exact(s, 16)
    length, request_id, response_to, op = struct.unpack("<iiii", head)
    return request_id, response_to, op, read_exact(s, length - 16)


def message(request_id, response_to, op, body):
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, op) + body


def inflate(cid, data):
    if cid == 1:
        return snappy.uncompress(data)
    if cid == 2:
        return zlib.decompress(data)
    if cid == 3:
        return zstd.decompress(data)
    return data


def deflate(cid, data):
    if cid == 1:
        return snappy.compress(data)
    if cid == 2:
        return zlib.compress(data)
    return zstd.compress(data)


def hello_of(op, body):
    """The hello document of a request, if it is one."""
    if op == OP_QUERY:
        end = body.index(b"\0", 4)
        doc = bson.decode(body[end + 9:end + 9 + struct.unpack_from("<i", body, end + 9)[0]])
    elif op == OP_MSG and body[4] == 0:
        doc = bson.decode(body[5:5 + struct.unpack_from("<i", body, 5)[0]])
    else:
        return None
    return doc if next(iter(doc), "").lower() in ("hello", "ismaster") else None


def offer(op, body, compressors):
    """The hello reply with the compressors this proxy takes."""
    if op == OP_REPLY:
        start = 20
    else:
        start = 5
    n = struct.unpack_from("<i", body, start)[0]
    doc = bson.decode(body[start:start + n])
    doc["compression"] = [c for c in compressors if c in IDS]
    return body[:start] + bson.encode(doc) + body[start + n:]


def relay(client):
    up = socket.create_connection(("127.0.0.1", upstream))
    with lock, open(legs, "a") as f:
        fmt = lambda a: f"{a[0]}:{a[1]}"  # noqa: E731
        f.write(json.dumps({"client": fmt(client.getpeername()), "upstream": fmt(up.getsockname())}) + "\n")
    try:
        while True:
            request_id, _, op, body = read_message(client)
            cid = 0
            if op == OP_COMPRESSED:
                op, _, cid = struct.unpack_from("<iiB", body)
                body = inflate(cid, body[9:])
            hello = hello_of(op, body)
            up.sendall(message(request_id, 0, op, body))
            if op == OP_MSG and struct.unpack_from("<I", body)[0] & 2:
                continue  # moreToCome: no reply
            rid, to, rop, rbody = read_message(up)
            if hello is not None and hello.get("compression"):
                rbody = offer(rop, rbody, hello["compression"])
            if cid:
                packed = struct.pack("<iiB", rop, len(rbody), cid) + deflate(cid, rbody)
                client.sendall(message(rid, to, OP_COMPRESSED, packed))
            else:
                client.sendall(message(rid, to, rop, rbody))
    except (EOFError, OSError):
        pass
    finally:
        client.close()
        up.close()


server = socket.create_server(("127.0.0.1", port))
while True:
    conn, _ = server.accept()
    threading.Thread(target=relay, args=(conn,), daemon=True).start()
