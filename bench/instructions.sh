#!/usr/bin/env bash
# Instructions per exchange of the user-space pipeline rows, counted by
# valgrind's callgrind: a figure that other work on a shared machine does not
# move (the pipeline bench's CPU-time rows still do, through the caches), so
# two builds compare within a few instructions. Each row runs 1 and 6
# iterations (NETTAP_BENCH_ITERS); the difference divided by 5 iterations'
# exchanges leaves set-up out.
#
#     bash bench/instructions.sh                 # every row below
#     bash bench/instructions.sh 'JVM agent'     # rows containing this
#     NETTAP_BENCH_BIN=/path/to/pipeline-old bash bench/instructions.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "bench/instructions.sh: valgrind is required (apt-get install valgrind)" >&2; exit 1; }

bin=${NETTAP_BENCH_BIN:-}
if [ -z "$bin" ]; then
  bin=$(cargo bench -p nettap-core --bench pipeline --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pipeline" and m.get("executable"):
        print(m["executable"])' | tail -n 1)
fi
[ -x "$bin" ] || { echo "bench/instructions.sh: no pipeline bench binary ($bin)" >&2; exit 1; }

# row name | exchanges per iteration (the bench's own workloads)
rows=(
  "HTTP/1.1 parser (session + reassembly), 100 B bodies|100"
  "HTTP/1.1 parser (session + reassembly), 4096 B bodies|100"
  "HTTP/2 parser (session + HPACK), 100 B bodies|100"
  "pipeline, HTTP/1.1 records (1 KiB bodies)|3200"
  "pipeline, HTTP/1.1 records, default redaction|3200"
  "pipeline, JVM agent frames, HTTP/1.1 records (1 KiB bodies)|3200"
  "pipeline, JVM agent frames, default redaction|3200"
)

count() { # iterations row -> instructions of the whole run
  local out
  out=$(NETTAP_BENCH_ITERS=$1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --bench "$2" 2>&1 >/dev/null)
  grep -oE 'Collected : [0-9]+' <<<"$out" | grep -oE '[0-9]+$'
}

echo "| row | instructions per exchange |"
echo "|---|---:|"
for r in "${rows[@]}"; do
  name=${r%|*} per=${r##*|}
  if [ $# -gt 0 ] && [[ $name != *"$1"* ]]; then continue; fi
  one=$(count 1 "=$name") six=$(count 6 "=$name")
  echo "| $name | $(( (six - one) / (5 * per) )) |"
done
