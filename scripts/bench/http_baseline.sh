#!/usr/bin/env bash
# scripts/bench/http_baseline.sh: keep-alive HTTPS requests/s and p99 latency of bulwarkd's
# GET /healthz (admin listener) against nginx returning a body of the same length with the same
# TLS settings, certificate, client and worker count. A measurement, not a test: it exits 0
# whether or not the goals are met, and non-zero only if something could not run.
#
# Environment: ROUNDS (3), DURATION (10s), CONNECTIONS (64), THREADS (2), WARMUP (3s),
#   SERVER_CPU (0) and CLIENT_CPU (1): cores for the servers and for wrk (empty: no pinning),
#   BUILD_DIR (build-bench), SKIP_BUILD=1 to reuse an existing build, KEEP=1 to keep the temp dir.
# Goals (from the issue): bulwarkd >= 0.8x nginx requests/s, p99 <= 1.2x nginx's p99.
set -euo pipefail
cd "$(dirname "$0")/../.."
umask 022 # the plugin loader refuses group- or world-writable plugins

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3s}
SERVER_CPU=${SERVER_CPU-0}
CLIENT_CPU=${CLIENT_CPU-1}
BUILD_DIR=${BUILD_DIR:-build-bench}
GOAL_RPS=0.8
GOAL_P99=1.2

die() {
	echo "http_baseline: $*" >&2
	exit 1
}

# ---- dependencies and a release build (no sanitizers, no tests)
./scripts/deps install build bench
for tool in nginx wrk openssl taskset; do
	command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || die "$tool is not installed"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "${SKIP_BUILD:-0}" != 1 ] || [ ! -x "$BUILD_DIR/bin/bulwarkd" ]; then
	echo "Building a release bulwarkd in $BUILD_DIR ..." >&2
	cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DBW_TESTS=OFF -DBW_SANITIZE=OFF >/dev/null ||
		die "cmake configure failed"
	cmake --build "$BUILD_DIR" -j"$(nproc)" >"$BUILD_DIR/bench-build.log" 2>&1 ||
		die "build failed; see $BUILD_DIR/bench-build.log"
fi
BUILD_ABS=$(cd "$BUILD_DIR" && pwd)

# Pinning: the servers share SERVER_CPU (only one is loaded at a time), wrk gets CLIENT_CPU.
# Prefix arrays rather than a function, so that "$!" of a background server is the server.
if [ "$(nproc)" -lt 2 ]; then
	SERVER_CPU='' CLIENT_CPU=''
fi
SERVER_PIN=(env) CLIENT_PIN=(env)
[ -z "$SERVER_CPU" ] || SERVER_PIN=(taskset -c "$SERVER_CPU")
[ -z "$CLIENT_CPU" ] || CLIENT_PIN=(taskset -c "$CLIENT_CPU")

# ---- temp dir and cleanup of everything started here
TMP=$(mktemp -d /tmp/bulwark-bench.XXXXXX)
BW_PID='' NGX_PID=''
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	for p in $NGX_PID $BW_PID; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in $NGX_PID $BW_PID; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
		echo "http_baseline: files kept in $TMP" >&2
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports: ones nobody listens on (per /proc/net/tcp*), picked at random.
used_ports() {
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '
		NR > 1 {
			split($2, a, ":"); h = toupper(a[2]); n = 0
			for (i = 1; i <= length(h); i++) n = n * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1
			print n
		}'
}
pick_port() {
	local used p
	used=$(used_ports | sort -un)
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		if ! grep -qx "$p" <<<"$used" && ! grep -qx "$p" <<<"${PICKED:-}"; then
			PICKED="${PICKED:-}"$'\n'"$p"
			echo "$p"
			return
		fi
	done
	die "no free port found"
}
AGENT_PORT=$(pick_port)
ADMIN_PORT=$(pick_port)
NGINX_PORT=$(pick_port)

# One HTTPS GET over openssl s_client (no curl needed); prints the raw response.
https_get() {
	local port=$1 path=$2
	printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" |
		timeout 5 openssl s_client -quiet -connect "127.0.0.1:$port" -servername localhost 2>/dev/null || true
}
response_body() { sed '1,/^\r\?$/d'; }

# ---- bulwarkd: admin on 127.0.0.1 only, agent on another port, log level warn
mkdir -p "$TMP/bulwarkd"
cat >"$TMP/bulwarkd/bulwark.lua" <<EOF
server = { var_dir = "var", plugin_dir = "$BUILD_ABS/lib/bulwark/plugins", shutdown_timeout = "5s" }
listen = { agent = { "127.0.0.1:$AGENT_PORT" }, admin = { "127.0.0.1:$ADMIN_PORT" } }
tls = { generate = true }
log = { level = "warn", format = "text" }
plugins = { "example_hello" }
example_hello = { greeting = "Hello", interval = "5m" }
EOF
"${SERVER_PIN[@]}" "$BUILD_ABS/bin/bulwarkd" --config "$TMP/bulwarkd/bulwark.lua" \
	>"$TMP/bulwarkd/stdout.log" 2>"$TMP/bulwarkd/stderr.log" &
BW_PID=$!
ready=''
for _ in $(seq 100); do
	kill -0 "$BW_PID" 2>/dev/null || { cat "$TMP/bulwarkd/stderr.log" >&2; die "bulwarkd exited during startup"; }
	if https_get "$ADMIN_PORT" /healthz | head -1 | grep -q ' 200 '; then
		ready=1
		break
	fi
	sleep 0.1
done
[ -n "$ready" ] || die "bulwarkd did not answer /healthz within 10 s"
BW_BODY=$(https_get "$ADMIN_PORT" /healthz | response_body)
BW_HEAD=$(https_get "$ADMIN_PORT" /healthz | sed '/^\r\?$/q')
[ -n "$BW_BODY" ] || die "empty /healthz body from bulwarkd"
BODY_LEN=${#BW_BODY}

# ---- nginx: same certificate and TLS settings, one worker, a fixed body of the same length
# Read from the sources, whitespace collapsed so that reformatting does not matter.
c_string_after() { # FILE TEXT: the concatenated string literals right after TEXT
	tr '\n\t' '  ' <"$1" | sed 's/\\ / /g; s/  */ /g' | grep -o "$2[ (]*[^;{)#]*" | head -1 |
		grep -o '"[^"]*"' | tr -d '"\n' || true
}
CIPHERS=$(c_string_after host/services/tls.h '#define BW_TLS12_CIPHERS')
SUITES=$(c_string_after host/services/tls.c 'SSL_CTX_set_ciphersuites(ctx,')
TLS_GROUPS=$(c_string_after host/services/tls.c 'SSL_CTX_set1_groups_list(ctx,')
[ -n "$CIPHERS" ] || die "cannot read BW_TLS12_CIPHERS from host/services/tls.h"
# The body, kept byte for byte, as an nginx single-quoted string.
NGX_BODY=$(printf '%s' "$BW_BODY" | sed "s/\\\\/\\\\\\\\/g; s/'/\\\\'/g")
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 100000;
  keepalive_timeout 75s;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $TMP/bulwarkd/var/tls/server.pem;
    ssl_certificate_key $TMP/bulwarkd/var/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers $CIPHERS;
    ${SUITES:+ssl_conf_command Ciphersuites $SUITES;}
    ${TLS_GROUPS:+ssl_ecdh_curve $TLS_GROUPS;}
    ssl_session_cache shared:SSL:10m;
    location / {
      return 200 '$NGX_BODY';
    }
  }
}
EOF
"$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" ||
	die "nginx rejected the generated configuration $TMP/nginx/nginx.conf"
"${SERVER_PIN[@]}" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
	>"$TMP/nginx/stdout.log" 2>&1 &
NGX_PID=$!
ready=''
for _ in $(seq 100); do
	kill -0 "$NGX_PID" 2>/dev/null || { cat "$TMP/nginx/error.log" >&2; die "nginx exited during startup"; }
	if https_get "$NGINX_PORT" / | head -1 | grep -q ' 200 '; then
		ready=1
		break
	fi
	sleep 0.1
done
[ -n "$ready" ] || die "nginx did not answer within 10 s"
NGX_LEN=$(https_get "$NGINX_PORT" / | response_body | wc -c)
[ "$NGX_LEN" -eq "$BODY_LEN" ] || die "nginx body is $NGX_LEN bytes, bulwarkd's is $BODY_LEN"

# The protocol and cipher each side negotiates with a default client, to show they match.
negotiated() {
	timeout 5 openssl s_client -connect "127.0.0.1:$1" -servername localhost </dev/null 2>/dev/null |
		awk '/^New, / { sub(/^New, /, ""); print; exit }'
}

BW_URL="https://127.0.0.1:$ADMIN_PORT/healthz"
NGX_URL="https://127.0.0.1:$NGINX_PORT/healthz"

# CPU time (user + system, in clock ticks) used so far by a server: the process with all its
# threads, plus its children (nginx's worker).
cpu_ticks() {
	local pid=$1 t=0 c
	for c in "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		t=$((t + $(awk '{ print $14 + $15 }' /proc/"$c"/stat 2>/dev/null || echo 0)))
	done
	echo "$t"
}
TICK=$(getconf CLK_TCK)

# Runs wrk once against a server; prints "requests_per_s p99_ms cpu_us_per_request errors"
# (CPU: the server's own user + system time; errors: socket errors + non-2xx responses).
run_wrk() {
	local url=$1 dur=$2 pid=$3 out c0 c1
	c0=$(cpu_ticks "$pid")
	out=$("${CLIENT_PIN[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency "$url" 2>&1) ||
		die "wrk failed against $url: $out"
	c1=$(cpu_ticks "$pid")
	printf '%s\n' "$out" >>"$TMP/wrk.log"
	awk -v ticks=$((c1 - c0)) -v hz="$TICK" '
		function ms(v) {
			if (v ~ /us$/) return v / 1000
			if (v ~ /ms$/) return v + 0
			if (v ~ /s$/) return v * 1000
			return v + 0
		}
		/ requests in / { n = $1 }
		/Requests\/sec:/ { rps = $2 }
		$1 == "99%" { p99 = ms($2) }
		/Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
		/Non-2xx or 3xx responses:/ { errs += $5 }
		END {
			if (rps == "" || p99 == "" || n + 0 == 0) exit 1
			printf "%.0f %.3f %.1f %d\n", rps, p99, ticks / hz * 1e6 / n, errs
		}' <<<"$out" || die "cannot parse wrk output for $url: $out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "bulwarkd /healthz vs nginx, keep-alive HTTPS, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
echo "  date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "  machine:   $(nproc) vCPU, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r)," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  pinning:   servers on CPU ${SERVER_CPU:-any}, wrk on CPU ${CLIENT_CPU:-any}"
echo "  nginx:     $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(negotiated "$NGINX_PORT")"
echo "  bulwarkd:  $("$BUILD_ABS/bin/bulwarkd" --version 2>&1 | head -1), $(negotiated "$ADMIN_PORT")"
echo "  body:      $BODY_LEN bytes, application/json (nginx returns bulwarkd's body verbatim)"
echo "  headers:   bulwarkd $(printf '%s' "$BW_HEAD" | wc -c) bytes incl. status line"

echo "Warming up ($WARMUP each) ..." >&2
run_wrk "$NGX_URL" "$WARMUP" "$NGX_PID" >/dev/null || exit 1
run_wrk "$BW_URL" "$WARMUP" "$BW_PID" >/dev/null || exit 1

printf '\n%-6s %-9s %12s %10s %12s %7s\n' round server "requests/s" "p99 ms" "CPU us/req" errors
: >"$TMP/nginx.res"
: >"$TMP/bulwarkd.res"
errors=0
for r in $(seq "$ROUNDS"); do
	for who in nginx bulwarkd; do
		if [ "$who" = nginx ]; then url=$NGX_URL pid=$NGX_PID; else url=$BW_URL pid=$BW_PID; fi
		res=$(run_wrk "$url" "$DURATION" "$pid") || exit 1
		read -r rps p99 cpu errs <<<"$res"
		echo "$rps $p99 $cpu" >>"$TMP/$who.res"
		errors=$((errors + errs))
		printf '%-6s %-9s %12s %10s %12s %7s\n' "$r" "$who" "$rps" "$p99" "$cpu" "$errs"
	done
done
kill -0 "$BW_PID" 2>/dev/null || die "bulwarkd died during the run"
kill -0 "$NGX_PID" 2>/dev/null || die "nginx died during the run"

col_median() { cut -d' ' -f"$2" "$TMP/$1.res" | median; }
n_rps=$(col_median nginx 1) n_p99=$(col_median nginx 2) n_cpu=$(col_median nginx 3)
b_rps=$(col_median bulwarkd 1) b_p99=$(col_median bulwarkd 2) b_cpu=$(col_median bulwarkd 3)
printf '%-6s %-9s %12.0f %10.3f %12.1f\n' median nginx "$n_rps" "$n_p99" "$n_cpu"
printf '%-6s %-9s %12.0f %10.3f %12.1f\n' median bulwarkd "$b_rps" "$b_p99" "$b_cpu"
echo
awk -v br="$b_rps" -v nr="$n_rps" -v bp="$b_p99" -v np="$n_p99" -v bc="$b_cpu" -v nc="$n_cpu" \
	-v gr="$GOAL_RPS" -v gp="$GOAL_P99" 'BEGIN {
	r = br / nr; p = bp / np
	printf "bulwarkd/nginx requests/s: %.2fx (goal >= %.1fx)%s\n", r, gr, (r >= gr) ? "" : "  BELOW GOAL"
	printf "p99: %.2fx (goal <= %.1fx)%s\n", p, gp, (p <= gp) ? "" : "  ABOVE GOAL"
	if (nc > 0) printf "server CPU per request: %.2fx nginx (%.1f vs %.1f us; steadier than requests/s on a busy machine)\n", bc / nc, bc, nc
}'
# Rounds next to each other in time share the machine's mood: their ratios, for a feel of the spread.
echo "per-round requests/s ratios: $(paste -d' ' "$TMP/bulwarkd.res" "$TMP/nginx.res" |
	awk '{ printf "%s%.2f", (NR > 1) ? " " : "", $1 / $4 }')"
[ "$errors" -eq 0 ] || echo "warning: $errors socket errors or non-2xx responses during the rounds (see wrk output with KEEP=1)"
exit 0
