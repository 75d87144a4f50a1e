#!/usr/bin/env python3
"""Parses OpenMetrics text from stdin with prometheus_client's parser (one
nettap did not write; it refuses malformed text) and prints every sample as
a JSON line: {"name", "labels", "value"}.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}))
