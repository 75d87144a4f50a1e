#!/usr/bin/env python3
"""Real MySQL clients doing a fixed script against the MariaDB server on
127.0.0.1:PORT: PyMySQL (text protocol: DDL, an insert, a select, an error)
and mysql-connector-python's pure-Python prepared cursor (binary protocol:
COM_STMT_PREPARE/EXECUTE with integer, text, bytes and NULL parameters);
then a connection that answers the greeting with bytes that are not a
handshake response. Writes {pid, pymysql: {local}, connector: {local},
garbage: {local, sent}} to OUT."""
import json
import os
import socket
import sys
import time

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

# The server's greeting, then a packet 7 of 4 bytes: no handshake response
# (the server refuses it and hangs up; the parser gives up, counted).
g = socket.create_connection(("127.0.0.1", port))
head = g.recv(4, socket.MSG_WAITALL)
greeting = g.recv(int.from_bytes(head[:3], "little"), socket.MSG_WAITALL)
assert greeting[0] == 10, greeting
garbage = b"\x04\x00\x00\x07junk"
time.sleep(0.2)
g.sendall(garbage)
g.settimeout(5)
try:
    while g.recv(1000):
        pass
except ConnectionResetError:
    pass
info["garbage"] = {"local": "%s:%d" % g.getsockname(), "sent": garbage.hex()}
g.close()

with open(out, "w") as f:
    json.dump(info, f)
