#!/usr/bin/env python3
"""Subscribes to a nettap streaming API (nettap.v1.Capture/Subscribe, no
filters) with grpcio's generic calls, no generated code, and writes every
record's serialized bytes (protobuf keeps strings as UTF-8) to OUT until
COUNT records or TIMEOUT seconds. Creates READY once the call is open.

  api_raw.py unix:/path/api.sock OUT COUNT TIMEOUT READY
"""
import sys
import threading

import grpc

target, out, count, timeout, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
# The default authority of a unix: target is the escaped path, which the
# server rejects as an authority.
channel = grpc.insecure_channel(target, options=[("grpc.default_authority", "localhost")])
grpc.channel_ready_future(channel).result(timeout=10)
subscribe = channel.unary_stream(
    "/nettap.v1.Capture/Subscribe",
    request_serializer=lambda _: b"",  # SubscribeRequest with no filters
    response_deserializer=lambda raw: raw,
)
call = subscribe(None, timeout=timeout)
threading.Timer(0.3, lambda: open(ready, "w").close()).start()
seen = 0
with open(out, "wb") as f:
    try:
        for raw in call:
            f.write(len(raw).to_bytes(4, "big") + raw)
            f.flush()
            seen += 1
            if seen >= count:
                break
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
call.cancel()
print(seen)
