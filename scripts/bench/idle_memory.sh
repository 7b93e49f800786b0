#!/usr/bin/env bash
# scripts/bench/idle_memory.sh: resident memory of an idle bulwarkd with DEVICES (100,000)
# enrolled devices, against an idle bulwarkd with none, in the same run. The devices are seeded
# in bulk into a stopped server's database (seed_devices.py: rows as enrollment writes them);
# each server is then started, and IDLE seconds after its "ready" line VmRSS (and VmHWM, the
# peak) is read from /proc/PID/status. A measurement, not a test: it exits 0 whether or not the
# goal is met, non-zero only when something could not run.
#
# Environment: DEVICES (100000), IDLE (5 s), SERVER_CPU (0), BUILD_DIR (build-bench),
#   SKIP_BUILD=1, KEEP=1, WAIT_QUIET=0 (see devices_lib.sh).
# Goal (issue 3): VmRSS <= 64 MB with 100,000 devices.
# shellcheck disable=SC2154 # E_* and F_* are set through printf -v
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=idle_memory
# shellcheck source=scripts/bench/devices_lib.sh
. scripts/bench/devices_lib.sh

DEVICES=${DEVICES:-100000}
IDLE=${IDLE:-5}
GOAL_MB=64

bench_build
bench_pinning
bench_tmp

# Starts bulwarkd in DIR and waits for its "ready:" line (log level info), then for /healthz.
start_ready() {
	local dir=$1 admin=$2 from
	from=1
	[ ! -f "$dir/stderr.log" ] || from=$(($(wc -l <"$dir/stderr.log") + 1))
	bw_start "$dir" "$admin"
	for _ in $(seq 600); do
		tail -n +"$from" "$dir/stderr.log" | grep -q 'ready: ' && return 0
		sleep 0.1
	done
	die "no \"ready\" line from bulwarkd in $dir/stderr.log"
}

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# ---- both servers created (first start: TLS files, first administrator) and stopped, so that
# both measured starts are ordinary restarts; then one is seeded
EMPTY=$TMP/empty FULL=$TMP/full
E_ADMIN=$(pick_port) F_ADMIN=$(pick_port)
bw_config "$EMPTY" "$(pick_port)" "$E_ADMIN" info
bw_config "$FULL" "$(pick_port)" "$F_ADMIN" info
for d in "$EMPTY:$E_ADMIN" "$FULL:$F_ADMIN"; do
	start_ready "${d%:*}" "${d##*:}"
	bw_stop "$BW_PID"
	[ ! -e "${d%:*}/var/bulwark.db-wal" ] || die "bulwarkd did not stop cleanly"
done
wait_quiet
note "seeding $DEVICES devices ..."
python3 scripts/bench/seed_devices.py "$FULL/var/bulwark.db" "$DEVICES" >&2 || die "seeding failed"
DB_MB=$(du -m "$FULL/var/bulwark.db" | cut -f1)

# ---- both started, idle, measured
wait_quiet
start_ready "$EMPTY" "$E_ADMIN"
E_PID=$BW_PID
start_ready "$FULL" "$F_ADMIN"
F_PID=$BW_PID
LOADED=$(grep -o 'registry loaded: [0-9]* devices' "$FULL/stderr.log" | tail -1 | grep -o '[0-9]*' || echo '?')
sleep "$IDLE"
for v in VmRSS VmHWM RssAnon RssFile; do
	printf -v "E_$v" '%s' "$(status_kb "$E_PID" "$v")"
	printf -v "F_$v" '%s' "$(status_kb "$F_PID" "$v")"
done

echo "bulwarkd idle resident memory with $DEVICES devices vs none"
echo "  date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "  machine:   $(machine_line), $(awk '/MemTotal/ { printf "%.0f GB RAM", $2 / 1048576 }' /proc/meminfo)"
echo "  bulwarkd:  $("$BULWARKD" --version 2>&1 | head -1), plugin example_hello, read ${IDLE}s after \"ready\""
echo "  database:  $DB_MB MB with $DEVICES devices; registry loaded $LOADED devices"
echo
printf '%-10s %10s %10s %10s %10s\n' devices "VmRSS MB" "VmHWM MB" "anon MB" "file MB"
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
printf '%-10s %10s %10s %10s %10s\n' 0 "$(mb "$E_VmRSS")" "$(mb "$E_VmHWM")" "$(mb "$E_RssAnon")" "$(mb "$E_RssFile")"
printf '%-10s %10s %10s %10s %10s\n' "$DEVICES" "$(mb "$F_VmRSS")" "$(mb "$F_VmHWM")" "$(mb "$F_RssAnon")" \
	"$(mb "$F_RssFile")"
echo
awk -v e="$E_VmRSS" -v f="$F_VmRSS" -v n="$DEVICES" -v g="$GOAL_MB" 'BEGIN {
	printf "VmRSS with %d devices: %.1f MB (goal <= %d MB)%s\n", n, f / 1024, g, (f / 1024 <= g) ? "" : "  ABOVE GOAL"
	if (n > 0) printf "over the empty server: %.1f MB, %.0f bytes per device\n", (f - e) / 1024, (f - e) * 1024 / n
}'
exit 0
