#!/usr/bin/env python3
"""kafka-python against the broker on 127.0.0.1:PORT.
  create PORT TOPIC PARTITIONS   creates TOPIC with PARTITIONS partitions.
  read PORT TOPIC COUNT OUT      reads every partition of TOPIC from offset 0
                                 until COUNT records came (or 60 s passed, or
                                 5 s passed without a new record after COUNT),
                                 and writes them to OUT as JSON: [{partition,
                                 offset, key, value_b64}] in each partition's order.
"""
import base64
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

mode, port, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bootstrap = f"127.0.0.1:{port}"

if mode == "create":
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="nettap-test-admin")
    admin.create_topics([NewTopic(topic, num_partitions=int(sys.argv[4]), replication_factor=1)])
    admin.close()
    sys.exit(0)

count, out = int(sys.argv[4]), sys.argv[5]
consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="nettap-test-reader",
                         enable_auto_commit=False, group_id=None)
parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
assert parts, f"topic {topic} has no partitions"
consumer.assign(parts)
consumer.seek_to_beginning(*parts)
got = []
start = last = time.monotonic()
while time.monotonic() - start < 60:
    batch = consumer.poll(timeout_ms=500)
    for tp, recs in batch.items():
        for r in recs:
            got.append({"partition": tp.partition, "offset": r.offset,
                        "key": r.key.decode() if r.key is not None else None,
                        "value_b64": base64.b64encode(r.value).decode()})
            last = time.monotonic()
    # Past COUNT, a little longer: a duplicate would come after it.
    if len(got) >= count and time.monotonic() - last > 5:
        break
consumer.close()
got.sort(key=lambda r: (r["partition"], r["offset"]))
with open(out, "w") as f:
    json.dump(got, f)
