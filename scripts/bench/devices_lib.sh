# shellcheck shell=bash disable=SC2034 # variables set here are used by the scripts that source this
# scripts/bench/devices_lib.sh: helpers shared by the device benchmarks (checkin.sh,
# enroll_scale.sh, idle_memory.sh); sourced, not run. The caller sets BENCH (its name, for
# messages) and `set -euo pipefail`, and is in the repository root.
#
# Provides: die, bench_build (dependencies and a release build in $BUILD_DIR), bench_pinning
# (SERVER_PIN / CLIENT_PIN prefix arrays), bench_tmp (a temp dir, and an EXIT trap that stops
# every process started with bench_track), pick_port, wait_quiet (waits while another
# benchmark's wrk, nginx or bulwark-agent load runs), bw_config / bw_start / bw_stop /
# bw_wait_ready (bulwarkd), bw_enroll_key (an enrollment key through bulwarkctl), median,
# cpu_ticks, machine_line.

BUILD_DIR=${BUILD_DIR:-build-bench}
SERVER_CPU=${SERVER_CPU-0}
CLIENT_CPU=${CLIENT_CPU-1}
QUIET_WAIT=${QUIET_WAIT:-1800} # seconds wait_quiet waits at most for another benchmark to end

die() {
	echo "$BENCH: $*" >&2
	exit 1
}

note() { echo "$BENCH: $*" >&2; }

# ---- dependencies and a release build (no sanitizers, no tests)
bench_build() {
	umask 022 # the plugin loader refuses group- or world-writable plugins
	./scripts/deps install build bench || die "missing Debian packages (see above)"
	command -v python3 >/dev/null || die "python3 is not installed"
	command -v openssl >/dev/null || die "openssl is not installed"
	command -v taskset >/dev/null || die "taskset (util-linux) is not installed"
	if [ "${SKIP_BUILD:-0}" != 1 ] || [ ! -x "$BUILD_DIR/bin/bulwarkd" ]; then
		wait_quiet # a build takes both cores: not during another benchmark's measurement
		note "building a release bulwarkd in $BUILD_DIR ..."
		cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DBW_TESTS=OFF -DBW_SANITIZE=OFF >/dev/null ||
			die "cmake configure failed"
		cmake --build "$BUILD_DIR" -j"$(nproc)" >"$BUILD_DIR/bench-build.log" 2>&1 ||
			die "build failed; see $BUILD_DIR/bench-build.log"
	fi
	BUILD_ABS=$(cd "$BUILD_DIR" && pwd)
	BULWARKD=$BUILD_ABS/bin/bulwarkd
	BULWARKCTL=$BUILD_ABS/bin/bulwarkctl
	AGENT=$BUILD_ABS/bin/bulwark-agent
	for b in "$BULWARKD" "$BULWARKCTL" "$AGENT"; do
		[ -x "$b" ] || die "$b was not built"
	done
}

# Pinning: servers on SERVER_CPU, the load generator on CLIENT_CPU. Prefix arrays rather than a
# function, so that "$!" of a background server is the server itself (taskset execs it).
bench_pinning() {
	if [ "$(nproc)" -lt 2 ]; then
		SERVER_CPU='' CLIENT_CPU=''
	fi
	SERVER_PIN=(env) CLIENT_PIN=(env)
	[ -z "$SERVER_CPU" ] || SERVER_PIN=(taskset -c "$SERVER_CPU")
	[ -z "$CLIENT_CPU" ] || CLIENT_PIN=(taskset -c "$CLIENT_CPU")
}

# ---- temp dir and cleanup of everything started here
TRACKED=()
bench_track() { TRACKED+=("$1"); }

# Stops a process started here: SIGTERM, up to 30 s (bulwarkd flushes and checkpoints), SIGKILL.
stop_pid() {
	local p=$1
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || return 0
	for _ in $(seq 300); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
bench_cleanup() {
	local rc=$?
	for p in "${TRACKED[@]}"; do
		stop_pid "$p"
	done
	if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
		echo "$BENCH: files kept in $TMP" >&2
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}

bench_tmp() {
	TMP=$(mktemp -d "/tmp/bulwark-$BENCH.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

# Free loopback ports: ones nobody listens on (per /proc/net/tcp*), picked at random.
used_ports() {
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '
		NR > 1 {
			split($2, a, ":"); h = toupper(a[2]); n = 0
			for (i = 1; i <= length(h); i++) n = n * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1
			print n
		}'
}
PICKED=''
pick_port() {
	local used p
	used=$(used_ports | sort -un)
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		if ! grep -qx "$p" <<<"$used" && ! grep -qx "$p" <<<"$PICKED"; then
			PICKED="$PICKED"$'\n'"$p"
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# One HTTPS GET over openssl s_client (no curl needed); prints the raw response.
https_get() {
	local port=$1 path=$2
	printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" |
		timeout 5 openssl s_client -quiet -connect "127.0.0.1:$port" -servername localhost 2>/dev/null || true
}

# ---- sharing the machine with other benchmarks
#
# Two benchmarks measuring at the same time on a 2-core machine both measure garbage. Before each
# measurement, wait while another benchmark runs: a wrk or a `bulwark-agent load` this script did
# not start, or an nginx started by a running script (an nginx whose master's parent is init is
# a daemon or a leftover, idle, and not waited for). Processes of TRACKED and their children are
# ours. Quiet must hold for two checks 2 s apart (the gap between another script's runs is
# short). WAIT_QUIET=0 turns this off.
ppid_of() { ps -o ppid= -p "$1" 2>/dev/null | tr -d ' '; }
comm_of() { ps -o comm= -p "$1" 2>/dev/null; }
foreign_load() {
	local p ours c master
	for p in $(pgrep -x wrk; pgrep -f '^[^ ]*bulwark-agent load( |$)'; pgrep -x nginx); do
		ours=''
		for c in "${TRACKED[@]}"; do
			if [ "$p" = "$c" ] || [ "$(ppid_of "$p")" = "$c" ]; then
				ours=1
				break
			fi
		done
		[ -z "$ours" ] || continue
		if [ "$(comm_of "$p")" = nginx ]; then
			master=$p
			[ "$(comm_of "$(ppid_of "$p")")" != nginx ] || master=$(ppid_of "$p")
			[ "$(ppid_of "$master")" != 1 ] || continue
		fi
		echo "$p"
	done
}
wait_quiet() {
	[ "${WAIT_QUIET:-1}" != 0 ] || return 0
	local waited=0 others
	while :; do
		others=$(foreign_load)
		if [ -z "$others" ]; then
			sleep 2
			others=$(foreign_load)
			[ -n "$others" ] || break
		fi
		if [ "$waited" -eq 0 ]; then
			note "waiting for another benchmark to finish (pids $(echo "$others" | tr '\n' ' '))..."
		fi
		if [ "$waited" -ge "$QUIET_WAIT" ]; then
			note "still busy after ${QUIET_WAIT}s; measuring anyway (figures may be disturbed)"
			return 0
		fi
		sleep 3
		waited=$((waited + 5))
	done
	[ "$waited" -eq 0 ] || note "machine quiet again after about ${waited}s"
}

# ---- bulwarkd
# bw_config DIR AGENT_PORT ADMIN_PORT LOG_LEVEL: writes DIR/bulwark.lua (the plugin of
# http_baseline.sh, a quiet log level).
bw_config() {
	local dir=$1 agent=$2 admin=$3 level=${4:-warn}
	mkdir -p "$dir"
	cat >"$dir/bulwark.lua" <<EOF
server = { var_dir = "var", plugin_dir = "$BUILD_ABS/lib/bulwark/plugins", shutdown_timeout = "5s" }
listen = { agent = { "127.0.0.1:$agent" }, admin = { "127.0.0.1:$admin" } }
tls = { generate = true }
log = { level = "$level", format = "text" }
plugins = { "example_hello" }
example_hello = { greeting = "Hello", interval = "5m" }
EOF
}

# bw_start DIR ADMIN_PORT: starts bulwarkd on DIR/bulwark.lua, pinned to SERVER_CPU, appending
# to DIR/stderr.log; waits until the admin /healthz answers 200 (loading a registry of a
# million devices takes a while). Sets BW_PID.
bw_start() {
	local dir=$1 admin=$2
	"${SERVER_PIN[@]}" "$BULWARKD" --config "$dir/bulwark.lua" >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
	BW_PID=$!
	bench_track "$BW_PID"
	bw_wait_ready "$BW_PID" "$dir" "$admin"
}

bw_wait_ready() {
	local pid=$1 dir=$2 admin=$3
	for _ in $(seq 1800); do
		kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/stderr.log" >&2; die "bulwarkd exited during startup"; }
		if https_get "$admin" /healthz | head -1 | grep -q ' 200 '; then
			return 0
		fi
		sleep 0.1
	done
	die "bulwarkd did not answer /healthz within 180 s"
}

bw_stop() {
	stop_pid "$1"
}

# bw_enroll_key DIR ADMIN_PORT: logs in as the first administrator and prints a new
# enrollment key (unlimited uses).
bw_enroll_key() {
	local dir=$1 admin=$2 out
	local ctl=("$BULWARKCTL" --server "https://127.0.0.1:$admin" --ca "$dir/var/tls/ca.pem")
	export XDG_CONFIG_HOME="$dir/ctl"
	BULWARK_PASSWORD=$(cat "$dir/var/initial-admin-password") "${ctl[@]}" login --user admin >/dev/null 2>"$dir/ctl.err" ||
		die "bulwarkctl login failed"
	out=$("${ctl[@]}" --json keys create 2>>"$dir/ctl.err") || die "bulwarkctl keys create failed: $out"
	python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])' <<<"$out" ||
		die "no key in the answer of bulwarkctl keys create: $out"
}

# ---- figures
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# CPU time (user + system, in clock ticks) used so far by a process and its children's threads.
cpu_ticks() {
	local pid=$1 t=0 c
	for c in "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		t=$((t + $(awk '{ print $14 + $15 }' /proc/"$c"/stat 2>/dev/null || echo 0)))
	done
	echo "$t"
}

machine_line() {
	echo "$(nproc) vCPU, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r)," \
		"load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# json_get FILE EXPR: a value from a JSON file, EXPR in Python syntax on `j`.
json_get() {
	python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
