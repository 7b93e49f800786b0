#!/usr/bin/env bash
# scripts/bench/checkin.sh: device check-in throughput of bulwarkd with DEVICES (10,000) enrolled
# devices, over keep-alive HTTPS with client certificates (`bulwark-agent load --server`: each
# connection presents one device's certificate and posts `{}` to /agent/v1/checkin), against
# nginx answering a static 200-byte body with the same server certificate and TLS settings
# (`bulwark-agent load --url`: the same client, connections and threads). Rounds alternate
# nginx, bulwarkd, nginx, bulwarkd, ...; the figures are medians. A measurement, not a test: it
# exits 0 whether or not the goals are met, non-zero only when something could not run.
#
# Environment: DEVICES (10000), ROUNDS (3), DURATION (10s), CONNECTIONS (64), THREADS (2),
#   WARMUP (3s, one warm-up run of each server before the rounds), ENROLL_CONNECTIONS (256),
#   SERVER_CPU (0) and CLIENT_CPU (1): cores for the servers and for the client (empty: no
#   pinning), BUILD_DIR (build-bench), SKIP_BUILD=1 to reuse an existing build, KEEP=1 to keep
#   the temp dir, WAIT_QUIET=0 not to wait for other benchmarks (see devices_lib.sh).
# Goals (issue 3): bulwarkd >= 0.5x nginx requests/s, and p99 <= 10 ms at 64 connections.
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=checkin
# shellcheck source=scripts/bench/devices_lib.sh
. scripts/bench/devices_lib.sh

DEVICES=${DEVICES:-10000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3s}
ENROLL_CONNECTIONS=${ENROLL_CONNECTIONS:-256}
GOAL_RPS=0.5
GOAL_P99_MS=10

bench_build
bench_pinning
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || die "nginx is not installed"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
bench_tmp

AGENT_PORT=$(pick_port)
ADMIN_PORT=$(pick_port)
NGINX_PORT=$(pick_port)
BW=$TMP/bulwarkd
bw_config "$BW" "$AGENT_PORT" "$ADMIN_PORT" warn
bw_start "$BW" "$ADMIN_PORT"
BW_MAIN=$BW_PID
CA=$BW/var/tls/ca.pem
SERVER_URL="https://127.0.0.1:$AGENT_PORT"

# ---- nginx: bulwarkd's certificate, protocols, ciphers and groups, device CA asked for
# (optional: the --url client presents none), one worker, a fixed 200-byte JSON body.
c_string_after() { # FILE TEXT: the concatenated string literals right after TEXT
	tr '\n\t' '  ' <"$1" | sed 's/\\ / /g; s/  */ /g' | grep -o "$2[ (]*[^;{)#]*" | head -1 |
		grep -o '"[^"]*"' | tr -d '"\n' || true
}
CIPHERS=$(c_string_after host/services/tls.h '#define BW_TLS12_CIPHERS')
SUITES=$(c_string_after host/services/tls.c 'SSL_CTX_set_ciphersuites(ctx,')
TLS_GROUPS=$(c_string_after host/services/tls.c 'SSL_CTX_set1_groups_list(ctx,')
[ -n "$CIPHERS" ] || die "cannot read BW_TLS12_CIPHERS from host/services/tls.h"
BODY='{"commands":[],"policy":{"version":"0"},"checkin_interval":300,"renew_certificate":false,"pad":"'
while [ ${#BODY} -lt 198 ]; do BODY="${BODY}x"; done
BODY="$BODY\"}"
[ ${#BODY} -eq 200 ] || die "nginx body is ${#BODY} bytes, not 200"
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
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $BW/var/tls/server.pem;
    ssl_certificate_key $BW/var/tls/server.key;
    ssl_client_certificate $BW/var/tls/device-ca.pem;
    ssl_verify_client optional;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers $CIPHERS;
    ${SUITES:+ssl_conf_command Ciphersuites $SUITES;}
    ${TLS_GROUPS:+ssl_ecdh_curve $TLS_GROUPS;}
    ssl_session_cache shared:SSL:10m;
    location / {
      return 200 '$BODY';
    }
  }
}
EOF
"$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" ||
	die "nginx rejected the generated configuration $TMP/nginx/nginx.conf"
"${SERVER_PIN[@]}" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
	>"$TMP/nginx/stdout.log" 2>&1 &
NGX_PID=$!
bench_track "$NGX_PID"
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
NGX_URL="https://127.0.0.1:$NGINX_PORT/"

# ---- the fleet: DEVICES enrolled once, in parallel, into a state directory reused by every round
KEY=$(bw_enroll_key "$BW" "$ADMIN_PORT")
FLEET=$TMP/fleet
note "enrolling $DEVICES devices over $ENROLL_CONNECTIONS connections ..."
wait_quiet
t0=$(date +%s.%N)
# (a short check-in phase follows the enrollment; only the enrollment matters here)
rc=0
BULWARK_ENROLL_KEY=$KEY "$AGENT" load --server "$SERVER_URL" --ca "$CA" --devices "$DEVICES" \
	--state-dir "$FLEET" --connections "$ENROLL_CONNECTIONS" --duration 0.1 --quiet --json \
	>"$TMP/enroll.json" 2>"$TMP/enroll.err" || rc=$?
t1=$(date +%s.%N)
ENROLLED=$(json_get "$TMP/enroll.json" 'j["enrollment"]["enrolled"]' 2>/dev/null || echo 0)
if [ "$rc" -gt 1 ] || [ "$ENROLLED" != "$DEVICES" ]; then
	cat "$TMP/enroll.err" >&2
	die "enrolling $DEVICES devices failed (exit $rc, $ENROLLED enrolled)"
fi
ENROLL_RATE=$(json_get "$TMP/enroll.json" '"%.0f" % j["enrollment"]["per_s"]')
ENROLL_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

# Runs one load against a server; prints "requests_per_s p99_ms cpu_us_per_request errors"
# (CPU: the server's own user + system time over the run, per measured request).
run_load() {
	local who=$1 dur=$2 pid out c0 c1 rc=0
	local args=(--duration "$dur" --connections "$CONNECTIONS" --threads "$THREADS" --quiet --json)
	if [ "$who" = nginx ]; then
		pid=$NGX_PID
		args=(--url "$NGX_URL" --ca "$CA" "${args[@]}")
	else
		pid=$BW_MAIN
		args=(--server "$SERVER_URL" --ca "$CA" --devices "$DEVICES" --state-dir "$FLEET" "${args[@]}")
	fi
	wait_quiet
	c0=$(cpu_ticks "$pid")
	out=$("${CLIENT_PIN[@]}" "$AGENT" load "${args[@]}" 2>"$TMP/load.err") || rc=$?
	c1=$(cpu_ticks "$pid")
	printf '%s\n' "$out" >>"$TMP/load-$who.json"
	[ "$rc" -le 1 ] || { cat "$TMP/load.err" >&2; die "bulwark-agent load against $who failed (exit $rc)"; }
	python3 -c '
import json, sys
j = json.loads(sys.argv[1])
n = j["requests"]
if n == 0:
    sys.exit("no request was measured: %s" % json.dumps(j["first_errors"]))
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / n
print("%.0f %.3f %.1f %d" % (j["requests_per_s"], j["latency_ms"]["p99"], cpu_us, j["errors"]["total"] + j["non_2xx"]))
' "$out" "$((c1 - c0))" "$(getconf CLK_TCK)" || die "cannot read the result of bulwark-agent load against $who"
}

echo "bulwarkd device check-ins vs nginx static 200 bytes, keep-alive HTTPS, bulwark-agent load"
echo "  date:        $(date -u +%Y-%m-%dT%H:%MZ)"
echo "  machine:     $(machine_line)"
echo "  pinning:     servers on CPU ${SERVER_CPU:-any}, client on CPU ${CLIENT_CPU:-any}"
echo "  nginx:       $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, GET / -> 200-byte body"
echo "  bulwarkd:    $("$BULWARKD" --version 2>&1 | head -1), POST /agent/v1/checkin {} with a device certificate"
echo "  load:        $CONNECTIONS connections, $THREADS threads, $DURATION per round, $ROUNDS rounds"
echo "  devices:     $ENROLLED enrolled in ${ENROLL_WALL}s ($ENROLL_RATE/s over $ENROLL_CONNECTIONS connections," \
	"client unpinned); check-ins come from the first $CONNECTIONS"

note "warming up ($WARMUP each) ..."
run_load nginx "$WARMUP" >/dev/null
run_load bulwarkd "$WARMUP" >/dev/null
: >"$TMP/load-nginx.json"
: >"$TMP/load-bulwarkd.json"

printf '\n%-6s %-9s %12s %10s %12s %7s\n' round server "requests/s" "p99 ms" "CPU us/req" errors
: >"$TMP/nginx.res"
: >"$TMP/bulwarkd.res"
errors=0
for r in $(seq "$ROUNDS"); do
	for who in nginx bulwarkd; do
		res=$(run_load "$who" "$DURATION") || exit 1
		read -r rps p99 cpu errs <<<"$res"
		echo "$rps $p99 $cpu" >>"$TMP/$who.res"
		errors=$((errors + errs))
		printf '%-6s %-9s %12s %10s %12s %7s\n' "$r" "$who" "$rps" "$p99" "$cpu" "$errs"
	done
done
kill -0 "$BW_MAIN" 2>/dev/null || die "bulwarkd died during the run"
kill -0 "$NGX_PID" 2>/dev/null || die "nginx died during the run"

col_median() { cut -d' ' -f"$2" "$TMP/$1.res" | median; }
n_rps=$(col_median nginx 1) n_p99=$(col_median nginx 2) n_cpu=$(col_median nginx 3)
b_rps=$(col_median bulwarkd 1) b_p99=$(col_median bulwarkd 2) b_cpu=$(col_median bulwarkd 3)
printf '%-6s %-9s %12.0f %10.3f %12.1f\n' median nginx "$n_rps" "$n_p99" "$n_cpu"
printf '%-6s %-9s %12.0f %10.3f %12.1f\n' median bulwarkd "$b_rps" "$b_p99" "$b_cpu"
echo
awk -v br="$b_rps" -v nr="$n_rps" -v bp="$b_p99" -v bc="$b_cpu" -v nc="$n_cpu" -v gr="$GOAL_RPS" \
	-v gp="$GOAL_P99_MS" -v c="$CONNECTIONS" 'BEGIN {
	r = br / nr
	printf "bulwarkd/nginx requests/s: %.2fx (goal >= %.1fx)%s\n", r, gr, (r >= gr) ? "" : "  BELOW GOAL"
	printf "bulwarkd p99: %.2f ms at %d connections (goal <= %d ms)%s\n", bp, c, gp, (bp <= gp) ? "" : "  ABOVE GOAL"
	if (nc > 0) printf "server CPU per request: %.2fx nginx (%.1f vs %.1f us; less sensitive to a busy machine)\n", bc / nc, bc, nc
}'
echo "per-round requests/s ratios: $(paste -d' ' "$TMP/bulwarkd.res" "$TMP/nginx.res" |
	awk '{ printf "%s%.2f", (NR > 1) ? " " : "", $1 / $4 }')"
[ "$errors" -eq 0 ] || echo "warning: $errors errors or non-2xx answers during the rounds (KEEP=1 keeps the JSON results)"
exit 0
