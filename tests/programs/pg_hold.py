#!/usr/bin/env python3
"""A psycopg 3 connection opened and used before the sensor starts: then
DIR/waiting is made and the client waits for DIR/go, then an extended
query with a parameter, a simple query and an error on the same
connection. Writes {pid, local, backend} as JSON to DIR/peer.json."""
import json
import os
import sys
import time

import psycopg

port, password, d = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password,
                       dbname="postgres", autocommit=True, sslmode="disable")
port_seen, backend = conn.execute("SELECT inet_client_port(), pg_backend_pid()").fetchone()
open(os.path.join(d, "waiting"), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(d, "go")):
    assert time.time() < deadline, "never told to go on"
    time.sleep(0.02)
assert conn.execute("SELECT %s::int + 1 AS answer", (41,)).fetchone() == (42,)
assert conn.execute("SELECT 'after' AS word").fetchone() == ("after",)
try:
    conn.execute("SELECT * FROM nope")
    raise SystemExit("the error did not happen")
except psycopg.errors.UndefinedTable:
    pass
conn.close()
with open(os.path.join(d, "peer.json"), "w") as f:
    json.dump({"pid": os.getpid(), "local": f"127.0.0.1:{port_seen}", "backend": backend}, f)
