#!/usr/bin/env python3
"""A real Kafka client (kafka-python) against the broker on 127.0.0.1:PORT:
produces COUNT records (key key-i, value value-i, a header trace: t-i) to
TOPIC gzip-compressed with acks=all, consumes them from offset 0 (assign, no
group), then opens a socket of its own that sends an ApiVersions request
and then bytes that are not Kafka. Writes {pid, consumed, garbage: {local,
remote}} as JSON to OUT."""
import json
import os
import socket
import struct
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

port, topic, count, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
bootstrap = f"127.0.0.1:{port}"

producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="nettap-py-producer", acks="all",
                         compression_type="gzip", linger_ms=100)
for i in range(count):
    producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(),
                  headers=[("trace", f"t-{i}".encode())], partition=0)
producer.flush()
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="nettap-py-consumer",
                         enable_auto_commit=False, group_id=None)
tp = TopicPartition(topic, 0)
consumer.assign([tp])
consumer.seek_to_beginning(tp)
got = []
deadline = time.monotonic() + 30
while len(got) < count and time.monotonic() < deadline:
    for recs in consumer.poll(timeout_ms=500).values():
        got += [{"offset": r.offset, "key": r.key.decode(), "value": r.value.decode()} for r in recs]
consumer.close()

# ApiVersions v0 (client id "garbage"), its answer, then bytes that are not Kafka.
s = socket.create_connection(("127.0.0.1", port))
body = struct.pack(">hhih", 18, 0, 99, 7) + b"garbage"
s.sendall(struct.pack(">i", len(body)) + body)
size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
s.recv(size, socket.MSG_WAITALL)
garbage = {"local": "%s:%d" % s.getsockname(), "remote": "%s:%d" % s.getpeername()}
s.sendall(b"\xff\xff\xff\xffthis is not kafka")
s.close()

with open(out + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "consumed": got, "garbage": garbage}, f)
os.rename(out + ".tmp", out)
