#!/usr/bin/env python3
"""Loads a HAR file with haralyzer (a parser nettap did not write) and prints,
as JSON, what it read of each entry, so the test compares through its eyes.
Fails if haralyzer cannot load the file or an entry lacks a HAR 1.2 field.

  har_check.py FILE
"""
import json
import sys

from haralyzer import HarParser

REQUIRED = {
    "entry": ["startedDateTime", "time", "request", "response", "cache", "timings"],
    "request": ["method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize", "bodySize"],
    "response": ["status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL",
                 "headersSize", "bodySize"],
}


def main() -> int:
    with open(sys.argv[1]) as f:
        har = HarParser(json.load(f))
    assert har.version == "1.2", har.version
    assert har.creator["name"] == "nettap"
    out = []
    for page in har.pages:
        for e in page.entries:
            raw = e.raw_entry
            for key in REQUIRED["entry"]:
                assert key in raw, f"entry lacks {key}"
            for part in ("request", "response"):
                for key in REQUIRED[part]:
                    assert key in raw[part], f"{part} lacks {key}"
            out.append({
                "method": e.request.method,
                "url": e.request.url,
                "status": e.response.status,
                "request_text": (raw["request"].get("postData") or {}).get("text"),
                "response_text": e.response.text,
                "response_mime": e.response.mimeType,
                "request_headers": {h["name"].lower(): h["value"] for h in e.request.headers},
                "time": e.time,
                "pid": raw["_pid"],
                "http_version": raw["request"]["httpVersion"],
            })
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
