#!/usr/bin/env python3
"""A real Redis client (redis-py) doing a fixed script against the server on
127.0.0.1:PORT: plain commands, a pipeline, a 1 MiB binary value, an error,
RESP3 with a map reply, pub/sub, and bytes that stop being RESP. Writes
{pid, conns: {name: {local, remote}}} as JSON to OUT for the test to check
the records against."""
import json
import os
import socket
import sys

import redis

port, password, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conns = {}


def ends(sock):
    def fmt(a):
        return f"{a[0]}:{a[1]}"
    return {"local": fmt(sock.getsockname()), "remote": fmt(sock.getpeername())}


def client(protocol):
    r = redis.Redis(host="127.0.0.1", port=port, password=password, protocol=protocol,
                    single_connection_client=True)
    r.ping()
    return r


# RESP2: commands one at a time, then six in one pipeline.
r2 = client(2)
conns["resp2"] = ends(r2.connection._sock)
assert r2.set("greeting", "hello")
assert r2.get("greeting") == b"hello"
# A pipeline takes a connection of its own from the client's pool.
rp = redis.Redis(host="127.0.0.1", port=port, password=password, protocol=2)
p = rp.pipeline(transaction=False)
p.set("counter", 1).incr("counter").get("counter").rpush("list", "a", "b").lrange("list", 0, -1).get("missing")
assert p.execute() == [True, 2, b"2", 2, [b"a", b"b"], None]
c = rp.connection_pool.get_connection()
conns["pipeline"] = ends(c._sock)
rp.connection_pool.release(c)
big = bytes(range(256)) * 4096  # 1 MiB, not UTF-8
assert r2.set("big", big)
assert r2.get("big") == big
try:
    r2.execute_command("NOSUCHCMD", "x")
    raise SystemExit("NOSUCHCMD did not fail")
except redis.ResponseError:
    pass

# RESP3: HELLO 3, a map reply.
r3 = client(3)
conns["resp3"] = ends(r3.connection._sock)
assert r3.hset("h", mapping={"f": "v"}) == 1
assert r3.hgetall("h") == {b"f": b"v"}

# Pub/sub: a subscriber, a message published on the RESP2 connection.
sub = redis.Redis(host="127.0.0.1", port=port, password=password, protocol=2).pubsub()
sub.subscribe("news")
first = sub.get_message(timeout=5)
assert first and first["type"] == "subscribe", first
conns["sub"] = ends(sub.connection._sock)
assert r2.publish("news", "extra") == 1
msg = sub.get_message(timeout=5)
assert msg and msg["type"] == "message" and msg["data"] == b"extra", msg
sub.unsubscribe("news")
bye = sub.get_message(timeout=5)
assert bye and bye["type"] == "unsubscribe", bye
sub.close()
r2.close()
r3.close()
rp.close()

# A good command, then bytes that are not RESP: the server gives up on the
# connection and so does the parser (a counted drop, the bytes kept raw).
s = socket.create_connection(("127.0.0.1", port))
conns["garbage"] = ends(s)
s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password.encode()))
assert s.recv(100) == b"+OK\r\n"
s.sendall(b"*1\r\n$x\r\n")
s.settimeout(5)
reply = b""
while True:
    chunk = s.recv(1000)
    if not chunk:
        break
    reply += chunk
assert reply.startswith(b"-ERR Protocol error"), reply
s.close()

with open(out, "w") as f:
    json.dump({"pid": os.getpid(), "conns": conns}, f)
