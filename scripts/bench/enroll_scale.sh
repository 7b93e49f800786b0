#!/usr/bin/env bash
# scripts/bench/enroll_scale.sh: enrollment rate of bulwarkd with BIG (1,000,000) devices already
# enrolled, against the rate with SMALL (1,000) enrolled, in the same run. Each server is started
# once to create its database, stopped, seeded in bulk (seed_devices.py: rows as enrollment writes
# them), and started again (its registry loads every device). Each round then enrolls ENROLL
# (2,000) new devices over ENROLL_CONNECTIONS connections with `bulwark-agent load` (real
# enrollments: key check, CSR, certificate issued by the device CA, device row), alternating
# small, big, small, big, ...; the figures are medians. A measurement, not a test: it exits 0
# whether or not the goal is met, non-zero only when something could not run.
#
# Environment: SMALL (1000), BIG (1000000), ENROLL (2000), ROUNDS (5; a round takes seconds), ENROLL_CONNECTIONS (64),
#   SERVER_CPU (0) and CLIENT_CPU (1), BUILD_DIR (build-bench), SKIP_BUILD=1, KEEP=1, WAIT_QUIET=0
#   (see devices_lib.sh).
# Goal (issue 3): the rate with BIG devices >= 0.8x the rate with SMALL devices.
# shellcheck disable=SC2154 # small_* and big_* are set by prepare() through printf -v
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=enroll_scale
# shellcheck source=scripts/bench/devices_lib.sh
. scripts/bench/devices_lib.sh

SMALL=${SMALL:-1000}
BIG=${BIG:-1000000}
ENROLL=${ENROLL:-2000}
ROUNDS=${ROUNDS:-5}
ENROLL_CONNECTIONS=${ENROLL_CONNECTIONS:-64}
GOAL=0.8

bench_build
bench_pinning
bench_tmp

# prepare NAME COUNT: a server with COUNT seeded devices, running. Sets <NAME>_PID, <NAME>_AGENT
# (its agent URL), <NAME>_KEY (an enrollment key), <NAME>_LOAD_S (seconds from start to ready).
prepare() {
	local name=$1 count=$2 dir=$TMP/$1 agent admin key t0 t1
	agent=$(pick_port)
	admin=$(pick_port)
	bw_config "$dir" "$agent" "$admin" warn
	bw_start "$dir" "$admin"
	key=$(bw_enroll_key "$dir" "$admin")
	bw_stop "$BW_PID"
	[ ! -e "$dir/var/bulwark.db-wal" ] || die "$name: bulwarkd did not stop cleanly"
	wait_quiet # seeding a million rows takes a core for a while: not during another's measurement
	note "$name: seeding $count devices ..."
	python3 scripts/bench/seed_devices.py "$dir/var/bulwark.db" "$count" >&2 || die "$name: seeding failed"
	t0=$(date +%s.%N)
	bw_start "$dir" "$admin"
	t1=$(date +%s.%N)
	printf -v "${name}_PID" '%s' "$BW_PID"
	printf -v "${name}_AGENT" '%s' "https://127.0.0.1:$agent"
	printf -v "${name}_KEY" '%s' "$key"
	printf -v "${name}_LOAD_S" '%s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
}

prepare small "$SMALL"
prepare big "$BIG"

rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# Enrolls ENROLL devices on one server; prints "enrollments_per_s server_cpu_us_per_enrollment
# failures". The load command's short check-in phase afterwards (0.1 s) is not in the rate; it
# adds a little to the CPU figure of both servers alike.
run_enroll() {
	local name=$1 pid url key dir=$TMP/$1 out c0 c1 rc=0
	pid=${name}_PID url=${name}_AGENT key=${name}_KEY
	pid=${!pid} url=${!url} key=${!key}
	wait_quiet
	c0=$(cpu_ticks "$pid")
	out=$(BULWARK_ENROLL_KEY=$key "${CLIENT_PIN[@]}" "$AGENT" load --server "$url" --ca "$dir/var/tls/ca.pem" \
		--devices "$ENROLL" --connections "$ENROLL_CONNECTIONS" --duration 0.1 --quiet --json \
		2>"$TMP/load.err") || rc=$?
	c1=$(cpu_ticks "$pid")
	printf '%s\n' "$out" >>"$TMP/enroll-$name.json"
	[ "$rc" -le 1 ] || { cat "$TMP/load.err" >&2; die "bulwark-agent load against $name failed (exit $rc)"; }
	python3 -c '
import json, sys
j = json.loads(sys.argv[1])
e = j["enrollment"]
if e["enrolled"] == 0:
    sys.exit("nothing was enrolled")
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / e["enrolled"]
print("%.0f %.0f %d" % (e["per_s"], cpu_us, int(sys.argv[4]) - e["enrolled"]))
' "$out" "$((c1 - c0))" "$(getconf CLK_TCK)" "$ENROLL" || die "cannot read the result of bulwark-agent load against $name"
}

echo "bulwarkd enrollment rate with $BIG vs $SMALL devices already enrolled"
echo "  date:        $(date -u +%Y-%m-%dT%H:%MZ)"
echo "  machine:     $(machine_line)"
echo "  pinning:     servers on CPU ${SERVER_CPU:-any}, client on CPU ${CLIENT_CPU:-any}"
echo "  bulwarkd:    $("$BULWARKD" --version 2>&1 | head -1)"
echo "  enrollment:  $ENROLL devices per round (method key, ECDSA P-256 CSR), $ENROLL_CONNECTIONS connections," \
	"$ROUNDS rounds"
echo "  start:       small ready ${small_LOAD_S}s after start, big ${big_LOAD_S}s (registry load);" \
	"RSS small $(rss_mb "$small_PID") MB, big $(rss_mb "$big_PID") MB"

printf '\n%-6s %-7s %10s %11s %14s %12s %9s\n' round server devices "enrolls/s" "CPU us/enroll" "server busy" failures
: >"$TMP/small.res"
: >"$TMP/big.res"
failures=0
for r in $(seq "$ROUNDS"); do
	for name in small big; do
		res=$(run_enroll "$name") || exit 1
		read -r rate cpu fails <<<"$res"
		echo "$rate $cpu" >>"$TMP/$name.res"
		failures=$((failures + fails))
		if [ "$name" = small ]; then n=$SMALL; else n=$BIG; fi
		busy=$(awk -v r="$rate" -v c="$cpu" 'BEGIN { printf "%.0f%%", r * c / 1e4 }')
		printf '%-6s %-7s %10s %11s %14s %12s %9s\n' "$r" "$name" "$((n + (r - 1) * ENROLL))" "$rate" "$cpu" \
			"$busy" "$fails"
	done
done
kill -0 "$small_PID" 2>/dev/null || die "the small server died during the run"
kill -0 "$big_PID" 2>/dev/null || die "the big server died during the run"

col_median() { cut -d' ' -f"$2" "$TMP/$1.res" | median; }
s_rate=$(col_median small 1) s_cpu=$(col_median small 2)
b_rate=$(col_median big 1) b_cpu=$(col_median big 2)
printf '%-6s %-7s %10s %11.0f %14.0f\n' median small "$SMALL" "$s_rate" "$s_cpu"
printf '%-6s %-7s %10s %11.0f %14.0f\n' median big "$BIG" "$b_rate" "$b_cpu"
echo
awk -v br="$b_rate" -v sr="$s_rate" -v bc="$b_cpu" -v sc="$s_cpu" -v g="$GOAL" -v big="$BIG" -v small="$SMALL" 'BEGIN {
	r = br / sr
	printf "enrollments/s with %d devices: %.0f; with %d: %.0f\n", big, br, small, sr
	printf "ratio big/small: %.2fx (goal >= %.1fx)%s\n", r, g, (r >= g) ? "" : "  BELOW GOAL"
	if (sc > 0) printf "server CPU per enrollment: %.2fx (%.0f vs %.0f us)\n", bc / sc, bc, sc
}'
echo "per-round rate ratios: $(paste -d' ' "$TMP/big.res" "$TMP/small.res" |
	awk '{ printf "%s%.2f", (NR > 1) ? " " : "", $1 / $3 }')"
echo "(server busy: CPU per enrollment x enrollments/s, the share of its core the server used; well below"
echo " 100% means the client or the machine set the pace, and the CPU per enrollment is the better comparison)"
echo "RSS after the rounds: small $(rss_mb "$small_PID") MB, big $(rss_mb "$big_PID") MB"
[ "$failures" -eq 0 ] || echo "warning: $failures enrollments failed (KEEP=1 keeps the JSON results)"
exit 0
