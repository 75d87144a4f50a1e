#!/usr/bin/env python3
"""Real MySQL clients doing a fixed script against the MariaDB server on
127.0.0.1:PORT: PyMySQL (text protocol: DDL, an insert, a select, an error)
and mysql-connector-python's pure-Python prepared cursor (binary protocol:
COM_STMT_PREPARE/EXECUTE with integer, text, bytes and NULL parameters).
Writes {pid, pymysql: {local, thread}, connector: {local, thread}} to OUT."""
import json
import os
import sys

import mysql.connector
import pymysql

port, password, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
info = {"pid": os.getpid()}

c = pymysql.connect(host="127.0.0.1", port=port, user="app", password=password, database="shop",
                    autocommit=True)
info["pymysql"] = {"local": "%s:%d" % c._sock.getsockname()}
with c.cursor() as cur:
    cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), data BLOB)")
    cur.execute("INSERT INTO items VALUES (%s, %s, %s)", (1, "one", b"\x00\x01\xff"))
    cur.execute("SELECT id, name, data FROM items WHERE id = %s", (1,))
    assert cur.fetchall() == ((1, "one", b"\x00\x01\xff"),)
    try:
        cur.execute("SELECT * FROM nope")
        raise SystemExit("the error did not happen")
    except pymysql.err.ProgrammingError:
        pass
c.close()

k = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password=password, database="shop",
                            use_pure=True, ssl_disabled=True, autocommit=True)
info["connector"] = {"local": "%s:%d" % k._socket.sock.getsockname()}
cur = k.cursor(prepared=True)
cur.execute("INSERT INTO items VALUES (?, ?, ?)", (2, "two", None))
cur.execute("SELECT id, name, data FROM items WHERE id <= ? ORDER BY id", (2,))
rows = cur.fetchall()
assert [tuple(r) for r in rows] == [(1, "one", bytearray(b"\x00\x01\xff")), (2, "two", None)], rows
cur.close()
k.close()

with open(out, "w") as f:
    json.dump(info, f)
