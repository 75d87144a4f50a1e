#!/usr/bin/env python3
"""A real PostgreSQL client (psycopg 3) doing a fixed script against the
server on 127.0.0.1:PORT: DDL, inserts with parameters (text, integer,
bytea), a select with a parameter, a prepared statement, a transaction,
an error, 10 000 rows; then (without TLS) bytes that are not the protocol.
SSLMODE (optional, libpq's sslmode; `require` over TLS) defaults to
`prefer`. Writes {pid, local, backend, garbage} as JSON to OUT."""
import json
import os
import socket
import sys

import psycopg

port, password, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sslmode = sys.argv[4] if len(sys.argv) > 4 else "prefer"
conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password,
                       dbname="postgres", autocommit=True, sslmode=sslmode)
assert (conn.pgconn.ssl_in_use == 1) == (sslmode == "require"), "TLS in use is not as asked"
port_seen, backend = conn.execute("SELECT inet_client_port(), pg_backend_pid()").fetchone()
conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, data bytea)")
conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (1, "one", b"\x00\x01\xff"))
assert conn.execute("SELECT id, name, data FROM items WHERE id = %s", (1,)).fetchall() == [(1, "one", b"\x00\x01\xff")]
for i in (2, 3):
    conn.execute("INSERT INTO items VALUES (%s, %s, NULL)", (i, f"n{i}"), prepare=True)
with conn.transaction():
    conn.execute("UPDATE items SET name = %s WHERE id = %s", ("uno", 1))
try:
    conn.execute("SELECT * FROM nope")
    raise SystemExit("the error did not happen")
except psycopg.errors.UndefinedTable:
    pass
assert len(conn.execute("SELECT g FROM generate_series(1, 10000) g").fetchall()) == 10000
conn.close()


def garbage():
    """An SSLRequest, then a startup length no server accepts: the server
    hangs up and the parser gives up (a counted drop, the bytes kept raw)."""
    s = socket.create_connection(("127.0.0.1", port))
    local = "%s:%d" % s.getsockname()
    s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
    assert s.recv(1) == b"N"
    s.sendall(b"\x00\x00\x00\x02")
    s.settimeout(5)
    while s.recv(1000):
        pass
    s.close()
    return local


garbage_local = garbage() if sslmode != "require" else None

with open(out, "w") as f:
    json.dump({"pid": os.getpid(), "local": f"127.0.0.1:{port_seen}", "backend": backend,
               "garbage": garbage_local}, f)
