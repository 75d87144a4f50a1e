#!/usr/bin/env python3
"""A TLS client that loads libssl only when it imports `ssl` (a dlopen of
Python's _ssl module), signals that, waits for a go-ahead file, then makes
COUNT requests over one HTTPS connection, checking each answer.

  tls_late.py PORT CAFILE LOADED_FILE GO_FILE COUNT
"""
import json
import os
import sys
import time

port, cafile, loaded, go, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

import http.client  # noqa: E402
import ssl  # noqa: E402  (maps libssl now)

open(loaded, "w").close()
deadline = time.monotonic() + 30
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no go-ahead")
    time.sleep(0.01)

ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
c = http.client.HTTPSConnection("127.0.0.1", int(port), timeout=30, context=ctx)
for i in range(count):
    c.request("GET", f"/late{i}")
    assert c.getresponse().read() == json.dumps({"path": f"/late{i}"}).encode()
c.close()
