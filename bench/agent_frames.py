#!/usr/bin/env python3
"""Writes N HTTP/1.1 exchanges (1 KiB bodies each way, 64 connections) as a
JVM agent's frames (agent.proto, encoded here field by field as the agent
does) to a sensor's agent socket, as fast as the sensor reads them.
    python3 bench/agent_frames.py SOCKET N"""
import socket, sys, os

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7f; v >>= 7
        if v: out.append(b | 0x80)
        else: out.append(b); return bytes(out)

def field(tag, wire, payload):
    key = varint(tag << 3 | wire)
    if wire == 0: return key + varint(payload)
    return key + varint(len(payload)) + payload

def endpoint(ip, port): return field(1, 2, bytes(ip)) + field(2, 0, port)

def frame(body): return varint(len(body)) + body

sock_path, n = sys.argv[1], int(sys.argv[2])
body = bytes((ord('a') + i % 26) for i in range(1024))
req = (b"POST /api/v1/items?id=42 HTTP/1.1\r\nHost: svc.test\r\nUser-Agent: bench\r\nAccept: */*\r\n"
       b"Content-Type: application/json\r\nContent-Length: 1024\r\n\r\n") + body
resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: bench\r\nContent-Length: 1024\r\n\r\n" + body
hello = frame(field(1, 2, field(1, 0, os.getpid()) + field(2, 2, b"OpenJDK 64-Bit Server VM") + field(3, 2, b"17") + field(4, 2, b"bench")))
conns = 64
seqs = [[0, 0] for _ in range(conns)]
def data(c, direction, hook, payload, ts):
    conn = field(1, 2, endpoint([127, 0, 0, 1], 40000 + c)) + field(2, 2, endpoint([127, 0, 0, 1], 8443)) + field(3, 0, 1) + field(4, 0, (1 << 64) - 1)
    d = field(1, 2, conn) + (field(2, 0, direction) if direction else b"") + field(3, 0, hook) + \
        (field(4, 0, seqs[c][direction]) if seqs[c][direction] else b"") + field(5, 0, ts) + field(6, 0, 4242) + field(7, 2, payload)
    seqs[c][direction] += len(payload)
    return frame(field(2, 2, d))
s = socket.socket(socket.AF_UNIX); s.connect(sock_path)
s.sendall(hello)
ts = 10**12
batch = bytearray()
for i in range(n):
    c = i % conns
    ts += 1000
    batch += data(c, 0, 2, req, ts)
    ts += 1000
    batch += data(c, 1, 1, resp, ts)
    if len(batch) > (256 << 10):
        s.sendall(batch); batch = bytearray()
s.sendall(batch)
s.close()
