#!/usr/bin/env python3
"""A kafka-python producer whose connection to the broker on 127.0.0.1:PORT
is opened and used before the sensor starts: record 0 of TOPIC produced
(acks=all, uncompressed), then DIR/waiting is made and the producer waits
for DIR/go, then records 1 and 2 on the same connection. Writes {pid} as
JSON to DIR/peer.json."""
import json
import os
import sys
import time

from kafka import KafkaProducer

port, topic, d = int(sys.argv[1]), sys.argv[2], sys.argv[3]
producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", client_id="nettap-hold", acks="all", linger_ms=0)


def send(i):
    producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(), partition=0).get(timeout=30)


send(0)
open(os.path.join(d, "waiting"), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(d, "go")):
    assert time.time() < deadline, "never told to go on"
    time.sleep(0.02)
send(1)
send(2)
producer.close()
with open(os.path.join(d, "peer.json"), "w") as f:
    json.dump({"pid": os.getpid()}, f)
