#!/usr/bin/env python3
"""A pymongo connection (one in the pool; over TLS when a CAFILE is given)
opened and used before the sensor starts: an insert, then DIR/waiting is
made and the client waits for DIR/go, then a find and a count on the same
connection, and endSessions at close (FerretDB has none: an error). The
driver's command monitoring gives the commands after the go with their
replies as relaxed Extended JSON. Usage: PORT DIR [CAFILE]. Writes {pid,
local, after: [{request_id, command, reply}]} as JSON to DIR/peer.json."""
import json
import os
import sys
import time

import pymongo
from bson import json_util
from pymongo import monitoring

port, d = int(sys.argv[1]), sys.argv[2]
# An optional CA file: the server speaks TLS.
tls = {"tls": True, "tlsCAFile": sys.argv[3]} if len(sys.argv) > 3 else {}


def ejson(doc):
    return json.loads(json_util.dumps(doc, json_options=json_util.RELAXED_JSON_OPTIONS))


class Events(monitoring.CommandListener):
    def __init__(self):
        self.after, self.go = [], False

    def started(self, e):
        if self.go:
            self.after.append({"request_id": e.request_id, "command": ejson(e.command), "reply": None})

    def succeeded(self, e):
        self.answer(e.request_id, e.reply)

    def failed(self, e):
        self.answer(e.request_id, e.failure)

    def answer(self, request_id, doc):
        for ev in self.after:
            if ev["request_id"] == request_id:
                ev["reply"] = ejson(doc)


events = Events()
client = pymongo.MongoClient("127.0.0.1", port, maxPoolSize=1, event_listeners=[events], **tls)
people = client.hold.people
people.insert_one({"_id": 1, "when": "before the sensor"})
local = client.admin.command("whatsmyuri")["you"]
open(os.path.join(d, "waiting"), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(d, "go")):
    assert time.time() < deadline, "never told to go on"
    time.sleep(0.02)
events.go = True
assert people.find_one({"_id": 1})["when"] == "before the sensor"
assert people.count_documents({}) == 1
client.close()
with open(os.path.join(d, "peer.json"), "w") as f:
    json.dump({"pid": os.getpid(), "local": local, "after": events.after}, f)
