#!/usr/bin/env bash
# Coverage-guided fuzzing of the input decoders (npy, JSON, NDJSON, raw, gzip) with libFuzzer and AddressSanitizer.
#   Ops/fuzz/run.sh [SECONDS]     (default 60; crashers are written to .tmp/fuzz/ and the script exits non-zero)
# Seeds: valid inputs of every format. A crash found here becomes a regression test in Tests/BitFleetFetchTests.
set -euo pipefail
cd "$(dirname "$0")/../.."
Ops/setup.sh >&2
source Ops/env.sh
seconds=${1:-60}
work=.tmp/fuzz
mkdir -p "$work/corpus" "$work/crashes"
sources=(Sources/BitFleetFetch/{InputBatch,InputDecoder,JSONInputDecoder,NpyDecoder,Gzip}.swift Sources/JSONText/JSONString.swift)
swiftc -O -parse-as-library -sanitize=fuzzer,address -module-name BitFleetFetch \
  "${sources[@]}" Ops/fuzz/DecoderFuzzer.swift -o "$work/decoder-fuzzer"
python3 - "$work/corpus" <<'PY'
import gzip, io, json, sys
import numpy as np
out = sys.argv[1]
def save(name, selector, body):
    open(f"{out}/{name}", "wb").write(bytes([selector]) + body)
buf = io.BytesIO(); np.save(buf, np.arange(8, dtype=np.uint8).reshape(2, 4)); npy = buf.getvalue()
buf = io.BytesIO(); np.save(buf, np.ones((1, 4), dtype=np.float32)); npyf = buf.getvalue()
save("npy-u8", 1, npy); save("npy-f4", 1, npyf); save("npy-auto", 0, npy)
save("json", 2, json.dumps([[0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0]]).encode())
save("ndjson", 3, b'{"custom_id": "a", "input": [0, 1, 2, 3]}\n[4, 5, 6, 7]\n')
save("raw", 6, bytes(range(8))); save("rawf", 5, np.ones(4, dtype=np.float32).tobytes())
save("gzip", 0x20, gzip.compress(npy))
PY
set +e
ASAN_OPTIONS=detect_leaks=0 "$work/decoder-fuzzer" "$work/corpus" -max_total_time="$seconds" -max_len=4096 \
  -artifact_prefix="$work/crashes/" -print_final_stats=1 2>&1 | tail -25
status=${PIPESTATUS[0]}
set -e
exit "$status"
