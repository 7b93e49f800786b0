#!/usr/bin/env bash
# scripts/bench/rules.sh: compliance rule evaluations per second on one core: the sandboxed engine (device
# view built per device, instruction budget and memory cap on) for DEVICES devices x 10 rules, against plain
# Lua running the same checks on the same devices in the same run (bw-rules-bench), plus the rate of the 7
# shipped example rules. A measurement, not a test: exits 0 whether or not the goal is met, non-zero only when
# something could not run.
# Environment: DEVICES (100000), ROUNDS (3), CPU (0: the core to pin to; empty: no pinning),
#   BUILD_DIR (build-bench), SKIP_BUILD=1 to reuse an existing build.
# Goal (issue 5): >= 1,000,000 evaluations/s per core with the budget on.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICES=${DEVICES:-100000}
ROUNDS=${ROUNDS:-3}
CPU=${CPU-0}
BUILD_DIR=${BUILD_DIR:-build-bench}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DBW_TESTS=OFF >/dev/null
	cmake --build "$BUILD_DIR" -j"$(nproc)" --target bw-rules-bench >/dev/null
fi
BENCH="$BUILD_DIR/bin/bw-rules-bench"
[ -x "$BENCH" ] || { echo "rules.sh: $BENCH not built (is plugins/compliance_lua added to plugins/CMakeLists.txt?)" >&2; exit 1; }
PIN=()
if [ -n "$CPU" ] && command -v taskset >/dev/null; then
	PIN=(taskset -c "$CPU")
fi
"${PIN[@]}" "$BENCH" "$DEVICES" scripts/rules "$ROUNDS"
