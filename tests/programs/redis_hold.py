#!/usr/bin/env python3
"""A redis-py connection opened and used before the sensor starts: SET,
then DIR/waiting is made and the client waits for DIR/go, then GET and
INCR on the same connection. Writes {pid, local} as JSON to DIR/peer.json."""
import json
import os
import sys
import time

import redis

port, password, d = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = redis.Redis(host="127.0.0.1", port=port, password=password, protocol=2, single_connection_client=True)
assert r.set("before", "the sensor")
open(os.path.join(d, "waiting"), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(d, "go")):
    assert time.time() < deadline, "never told to go on"
    time.sleep(0.02)
assert r.get("before") == b"the sensor"
assert r.incr("after") == 1
local = "%s:%d" % r.connection._sock.getsockname()
r.close()
with open(os.path.join(d, "peer.json"), "w") as f:
    json.dump({"pid": os.getpid(), "local": local}, f)
