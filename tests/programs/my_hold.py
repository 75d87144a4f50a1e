#!/usr/bin/env python3
"""MySQL connections opened and used before the sensor starts: PyMySQL
(text protocol) creates and fills a table, mysql-connector-python's
pure-Python prepared cursor connects; then DIR/waiting is made and the
clients wait for DIR/go, then a select, an error and an insert on the
first connection and a prepared select (binary rows) on the second.
Writes {pid, pymysql: {local}, connector: {local}} as JSON to DIR/peer.json."""
import json
import os
import sys
import time

import mysql.connector
import pymysql

port, password, d = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = pymysql.connect(host="127.0.0.1", port=port, user="app", password=password, database="shop",
                    autocommit=True)
k = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password=password, database="shop",
                            use_pure=True, ssl_disabled=True, autocommit=True)
with c.cursor() as cur:
    cur.execute("CREATE TABLE held (id INT PRIMARY KEY, name VARCHAR(20))")
    cur.execute("INSERT INTO held VALUES (1, 'one')")
open(os.path.join(d, "waiting"), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(d, "go")):
    assert time.time() < deadline, "never told to go on"
    time.sleep(0.02)
with c.cursor() as cur:
    cur.execute("SELECT id, name FROM held ORDER BY id")
    assert cur.fetchall() == ((1, "one"),)
    try:
        cur.execute("SELECT * FROM nope")
        raise SystemExit("the error did not happen")
    except pymysql.err.ProgrammingError:
        pass
    cur.execute("INSERT INTO held VALUES (2, 'two')")
cur = k.cursor(prepared=True)
cur.execute("SELECT id, name FROM held WHERE id <= ? ORDER BY id", (2,))
assert [tuple(r) for r in cur.fetchall()] == [(1, "one"), (2, "two")]
info = {"pid": os.getpid(), "pymysql": {"local": "%s:%d" % c._sock.getsockname()},
        "connector": {"local": "%s:%d" % k._socket.sock.getsockname()}}
cur.close()
k.close()
c.close()
with open(os.path.join(d, "peer.json"), "w") as f:
    json.dump(info, f)
