#!/usr/bin/env python3
"""PyMySQL over TLS (the stdlib ssl module: the system's OpenSSL) against
the MariaDB server on 127.0.0.1:PORT, whose certificate is not checked: an
insert, a select and an error. Writes {pid, local} to OUT."""
import json
import os
import ssl
import sys

import pymysql

port, password, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = pymysql.connect(host="127.0.0.1", port=port, user="app", password=password, database="shop",
                    autocommit=True, ssl=ctx)
assert c._sock.version().startswith("TLS"), "not over TLS"
info = {"pid": os.getpid(), "local": "%s:%d" % c._sock.getsockname()}
with c.cursor() as cur:
    cur.execute("CREATE TABLE secure (id INT PRIMARY KEY, name VARCHAR(20))")
    cur.execute("INSERT INTO secure VALUES (1, 'over tls')")
    cur.execute("SELECT id, name FROM secure")
    assert cur.fetchall() == ((1, "over tls"),)
    try:
        cur.execute("SELECT * FROM nope")
        raise SystemExit("the error did not happen")
    except pymysql.err.ProgrammingError:
        pass
c.close()

with open(out, "w") as f:
    json.dump(info, f)
