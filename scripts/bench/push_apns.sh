#!/bin/sh
# scripts/bench/push_apns.sh: push_apns throughput over one HTTP/2 connection to a local nghttpd, against the
# minimal curl-multi client scripts/bench/push_baseline.c sending the same requests to the same endpoint in the same
# run; resident memory of bulwarkd sampled while it sends the pushes.
#
#   scripts/bench/push_apns.sh [BUILD_DIR]      (default: a Release build made in $TMPDIR/bw-bench-push)
#   env: COUNT (100000), INFLIGHT (100: both clients keep this many requests in flight), ROUNDS (3)
#
# The plugin is driven by its admin route POST /api/v1/plugins/push_apns/bench {"count": N}, which queues N pushes
# (token auth, a real ES256 JWT) as fast as the queue takes them and answers when all are done. nghttpd answers
# every POST with 200: it serves a file at the device path (nghttpd ignores the method; --echo-upload would write
# each body to a temporary file and cost the endpoint 5x). Needs nghttpd (nghttp2-server), gcc, libcurl, openssl, curl.
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
"$REPO/scripts/deps" install build test
COUNT=${COUNT:-100000}
INFLIGHT=${INFLIGHT:-100}
ROUNDS=${ROUNDS:-3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bw-push-bench.XXXXXX")
BUILD=${1:-}
NGHTTPD_PID=
BW_PID=
SAMPLER_PID=

cleanup() {
	[ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
	[ -n "$BW_PID" ] && kill "$BW_PID" 2>/dev/null && wait "$BW_PID" 2>/dev/null || true
	[ -n "$NGHTTPD_PID" ] && kill "$NGHTTPD_PID" 2>/dev/null && wait "$NGHTTPD_PID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

if [ -z "$BUILD" ]; then
	BUILD=${TMPDIR:-/tmp}/bw-bench-push
	echo "building Release in $BUILD ..."
	cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBW_TESTS=OFF >/dev/null
	cmake --build "$BUILD" -j2 --target bulwarkd push_apns >/dev/null
fi
BUILD=$(cd "$BUILD" && pwd)
chmod go-w "$BUILD/lib/bulwark/plugins" "$BUILD/lib/bulwark/plugins/push_apns.so"

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---- keys and certificates
cd "$TMP"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
	-subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
	-subj "/CN=127.0.0.1" 2>/dev/null
printf "subjectAltName=IP:127.0.0.1\n" >ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf \
	2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out AuthKey.p8 2>/dev/null

# ---- the endpoint
NPORT=$(free_port)
TOKEN=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
mkdir -p htdocs/3/device
echo '{}' >"htdocs/3/device/$TOKEN"
nghttpd -a 127.0.0.1 -m 1000 -d htdocs "$NPORT" server.key server.pem >nghttpd.log 2>&1 &
NGHTTPD_PID=$!
sleep 0.5
URL="https://127.0.0.1:$NPORT/3/device/$TOKEN"

# ---- the baseline client
gcc -O2 -o push_baseline "$REPO/scripts/bench/push_baseline.c" $(pkg-config --cflags --libs libcurl)

# ---- bulwarkd with push_apns
APORT=$(free_port)
GPORT=$(free_port)
cat >bulwark.lua <<EOF
server = { var_dir = "var", plugin_dir = "$BUILD/lib/bulwark/plugins", shutdown_timeout = "5s" }
listen = { agent = { "127.0.0.1:$GPORT" }, admin = { "127.0.0.1:$APORT" } }
tls = { generate = true }
log = { level = "info", format = "text" }
limits = { request_timeout = "600s" }
plugins = { { "push_apns", required = true } }
push_apns = { endpoint = "https://127.0.0.1:$NPORT", ca_file = "$TMP/ca.pem", key_file = "$TMP/AuthKey.p8",
              key_id = "BENCH00001", team_id = "TEAM000001", topic = "com.example.bench",
              max_inflight = $INFLIGHT, queue_size = 10000, max_retries = 0 }
EOF
"$BUILD/bin/bulwarkd" --config bulwark.lua >bw.out 2>bw.err &
BW_PID=$!
i=0
until grep -q "ready: " bw.err 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 100 ] || { cat bw.err; exit 1; }
	sleep 0.1
done
PASS=$(cat var/initial-admin-password)
ADMIN="https://127.0.0.1:$APORT"
SESSION=$(curl -s --cacert var/tls/ca.pem -H 'Content-Type: application/json' \
	-d "{\"user\":\"admin\",\"password\":\"$PASS\"}" "$ADMIN/api/v1/session" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

bench_plugin() { # $1 count -> prints the JSON answer
	curl -s -m 900 --cacert var/tls/ca.pem -H "Authorization: Bearer $SESSION" -H 'Content-Type: application/json' \
		-d "{\"count\": $1, \"token\": \"$TOKEN\"}" "$ADMIN/api/v1/plugins/push_apns/bench"
}
rate_of() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["failed"]==0, d; print("%.0f" % d["per_second"])' "$1"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$BW_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$BW_PID/stat"; }
TICK=$(getconf CLK_TCK)

echo "warm-up ..."
bench_plugin 2000 >/dev/null
./push_baseline "$URL" ca.pem 2000 "$INFLIGHT" >/dev/null

best_base=0
best_plug=0
r=1
while [ $r -le "$ROUNDS" ]; do
	b=$(./push_baseline "$URL" ca.pem "$COUNT" "$INFLIGHT")
	brate=$(echo "$b" | sed -n 's/.*= \([0-9]*\)\/s.*/\1/p')
	bcpu=$(echo "$b" | sed -n 's/.*cpu \([0-9.]*\) us.*/\1/p')
	rss_before=$(rss_kb)
	t_before=$(cpu_ticks)
	: >rss.txt
	(while :; do rss_kb >>rss.txt; sleep 0.25; done) &
	SAMPLER_PID=$!
	p=$(bench_plugin "$COUNT")
	kill "$SAMPLER_PID" 2>/dev/null || true
	wait "$SAMPLER_PID" 2>/dev/null || true
	SAMPLER_PID=
	prate=$(rate_of "$p")
	pcpu=$(python3 -c "print('%.1f' % (($(cpu_ticks) - $t_before) * 1e6 / $TICK / $COUNT))")
	rss_after=$(rss_kb)
	rss_min=$(sort -n rss.txt | head -1)
	rss_max=$(sort -n rss.txt | tail -1)
	echo "round $r: baseline $brate/s ($bcpu us cpu/request), push_apns $prate/s ($pcpu us cpu/push, whole" \
		"bulwarkd), ratio $(python3 -c "print('%.2f' % ($prate / $brate))"); $COUNT each, $INFLIGHT in flight"
	echo "         bulwarkd RSS KiB: before $rss_before, while sending min $rss_min max $rss_max, after $rss_after"
	[ "$brate" -gt "$best_base" ] && best_base=$brate
	[ "$prate" -gt "$best_plug" ] && best_plug=$prate
	r=$((r + 1))
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine skew single rounds)"
echo "best: baseline $best_base/s, push_apns $best_plug/s, ratio $(python3 -c "print('%.2f' % ($best_plug / $best_base))")"
[ "$(grep -c . nghttpd.log || true)" -eq 0 ] || tail -3 nghttpd.log
