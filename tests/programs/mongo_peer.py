#!/usr/bin/env python3
"""A real MongoDB client (pymongo) doing a fixed script against FerretDB on
127.0.0.1:PORT: PLAIN auth with PASSWORD, insert/find/update/delete/
aggregate, an unknown command (an error), a 5 MiB document; then the same
through the compressing relay on 127.0.0.1:ZPORT once per compressor
(zlib, zstd, snappy); then a legacy OP_QUERY isMaster followed by bytes
that are not MongoDB's.
The driver's own command monitoring gives every command and reply as it
sent and read them, written as relaxed Extended JSON by pymongo's json_util
(not nettap's code), for the test to compare with the records:
{pid, events: {client: [{request_id, command_name, database, command,
reply}]}, garbage: {local, remote}} to OUT."""
import json
import os
import socket
import struct
import sys

import bson
import pymongo
from bson import json_util
from pymongo import monitoring

port, zport, password, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
BIG = 5 << 20


def ejson(doc):
    return json.loads(json_util.dumps(doc, json_options=json_util.RELAXED_JSON_OPTIONS))


class Events(monitoring.CommandListener):
    def __init__(self):
        self.events, self.by_id = [], {}

    def started(self, e):
        big = e.command_name == "insert" and any(len(d.get("blob", "")) >= BIG for d in e.command.get("documents", []))
        ev = {"request_id": e.request_id, "command_name": e.command_name, "database": e.database_name,
              "command": "BIG" if big else ejson(e.command), "reply": None}
        self.by_id[e.request_id] = ev
        self.events.append(ev)

    def succeeded(self, e):
        self.by_id[e.request_id]["reply"] = ejson(e.reply)

    def failed(self, e):
        self.by_id[e.request_id]["reply"] = ejson(e.failure)


def script(client, big):
    people = client.shop.people
    people.insert_many([{"_id": 1, "name": "ada", "age": 36, "tags": ["math", "engines"]},
                        {"_id": 2, "name": "grace", "age": 45, "ratio": 0.25}])
    assert [d["name"] for d in people.find({"age": {"$gt": 40}})] == ["grace"]
    assert people.update_one({"_id": 1}, {"$set": {"age": 37}}).modified_count == 1
    got = list(people.aggregate([{"$match": {"age": {"$lt": 40}}}, {"$project": {"_id": 0, "name": 1, "age": 1}}]))
    assert got == [{"name": "ada", "age": 37}], got
    assert people.delete_one({"_id": 2}).deleted_count == 1
    try:
        client.shop.command("nosuchcommand")
        raise SystemExit("nosuchcommand did not fail")
    except pymongo.errors.OperationFailure:
        pass
    if big:
        people.insert_one({"_id": "big", "blob": "x" * BIG})
    people.drop()


events = {}
# Direct, with PLAIN authentication (the password travels in saslStart's payload).
listener = Events()
with pymongo.MongoClient("127.0.0.1", port, username="alice", password=password, authMechanism="PLAIN",
                         maxPoolSize=1, event_listeners=[listener]) as c:
    script(c, big=True)
events["plain"] = listener.events
# Through the relay, each compressor negotiated in the handshake.
for compressor in ("zlib", "zstd", "snappy"):
    listener = Events()
    with pymongo.MongoClient("127.0.0.1", zport, compressors=compressor, maxPoolSize=1,
                             event_listeners=[listener]) as c:
        script(c, big=False)
    events[compressor] = listener.events

# The legacy handshake (pymongo 4 speaks OP_MSG from the start; older
# drivers open with isMaster in OP_QUERY, answered by OP_REPLY), then a
# header whose length is 5 (shorter than a header): the server drops the
# connection and the parser gives up on it at both ends.
s = socket.create_connection(("127.0.0.1", port))
body = struct.pack("<I", 0) + b"admin.$cmd\0" + struct.pack("<ii", 0, -1) + bson.encode({"isMaster": 1})
s.sendall(struct.pack("<iiii", 16 + len(body), 77, 0, 2004) + body)
length = struct.unpack("<i", s.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL))[0]
reply = b""
while len(reply) < length:
    reply += s.recv(length - len(reply))
garbage = {"local": "%s:%d" % s.getsockname(), "remote": "%s:%d" % s.getpeername()}
s.sendall(struct.pack("<iiii", 5, 78, 0, 2013) + b"not bson")
s.recv(100)  # the server closes
s.close()

with open(out, "w") as f:
    json.dump({"pid": os.getpid(), "events": events, "garbage": garbage}, f)
