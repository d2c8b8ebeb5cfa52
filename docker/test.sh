#!/usr/bin/env bash
# The container deployment, tested for real: builds the images (docker/build.sh), makes
# passwords and certificates (scripts/compose-secrets), brings up docker/compose.yaml
# (sessiond with authentication and TLS, and two replicas of the example app that log in as
# user "app" over TLS) under a project name of its own, and checks that
#   1. a session created through replica 1 is read through replica 2;
#   2. sessiond is safe on the container network: the healthcheck (/health/ready) passes;
#      from another container on the network, a client without credentials gets
#      AUTH_REQUIRED, a wrong password or unknown user AUTH_FAILED (and is counted), each
#      role is refused what it may not run, a plain-TCP client cannot talk to the TLS port,
#      the plain port is not reachable at all, a client that does not trust the CA fails
#      the handshake; and no password appears in any container's log;
#   3. a renewed certificate, copied over the mounted file, is served to new connections after
#      `docker kill -s HUP`, while the app replicas' established connections carry on;
#   4. after `docker stop` (SIGTERM: drain, flush, fsync) and `docker start` of sessiond the
#      session is still there;
#   5. with fsync=always, a session acknowledged just before `docker kill -s KILL` is there
#      after `docker start`;
#   6. docker/compose.cluster.yaml, with the same images: three nodes and two replicas that
#      place sessions on them by node name. Sessions made through one replica are read
#      through the other and spread over all three nodes; with one node stopped, its users
#      get 503 at once while everyone else carries on; started again, its sessions are back.
# Whatever happens, it removes everything it created: containers, network, volume, images,
# and the secrets.
#
#   docker/test.sh
#
# Exit status: 0 passed; 77 skipped (no Docker engine or no compose; the reason is printed
# on a line starting with SKIPPED); anything else failed. tests/tests/docker.rs runs it as
# part of `cargo test --workspace`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)

skip() {
  echo "SKIPPED: $*"
  exit 77
}
command -v docker >/dev/null || skip "no docker command, so no Docker engine"
docker info >/dev/null 2>&1 || skip "no Docker engine (docker info failed)"
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  skip "a Docker engine, but neither 'docker compose' nor 'docker-compose'"
fi
if command -v curl >/dev/null; then
  http_client=curl
elif command -v python3 >/dev/null; then
  http_client=python3
else
  echo "docker/test.sh: needs curl or python3 on the host" >&2
  exit 1
fi
command -v openssl >/dev/null || {
  echo "docker/test.sh: needs openssl on the host (scripts/gen-certs)" >&2
  exit 1
}

# Unique names, so that concurrent runs and the user's own sessiond:local images and
# "docker" project are never touched.
run_id="sessiond-test-$$-$(date +%s)"
project="$run_id"
export SESSIOND_IMAGE="sessiond:$run_id"
export EXAMPLE_APP_IMAGE="sessiond-example-app:$run_id"
# Set but empty: the engine picks free host ports (read back with `compose port`).
export SESSIOND_PORT="" APP1_PORT="" APP2_PORT=""
# The first phases run with the image's configuration (fsync everysec).
unset SESSIOND_FSYNC RUST_LOG
work=$(mktemp -d)
# This run's passwords and certificates, not the user's docker/secrets.
export SESSIOND_SECRETS="$work/secrets"

# The project under test: docker/compose.yaml, then (step 6) docker/compose.cluster.yaml.
compose_file=compose.yaml
cluster_project="$run_id-cluster"
compose() {
  "${compose_cmd[@]}" --project-name "$project" --file "$repo/docker/$compose_file" "$@"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ "$status" -ne 0 ]; then
    echo "== FAILED (exit $status); the containers' last logs:"
    compose logs --no-color --tail=40 2>&1
  fi
  local left="" label
  for pair in "$run_id compose.yaml" "$cluster_project compose.cluster.yaml"; do
    read -r project compose_file <<<"$pair"
    echo "== tearing down $project"
    compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
    # Prove it: nothing labelled with the project may remain.
    label="label=com.docker.compose.project=$project"
    left+="$(docker ps -aq --filter "$label")$(docker network ls -q --filter "$label")"
    left+="$(docker volume ls -q --filter "$label")"
  done
  docker image rm "$SESSIOND_IMAGE" "$EXAMPLE_APP_IMAGE" >/dev/null 2>&1
  rm -rf "$work"
  # Nor either image.
  left+="$(docker image ls -q "$SESSIOND_IMAGE")$(docker image ls -q "$EXAMPLE_APP_IMAGE")"
  if [ -n "$left" ]; then
    echo "docker/test.sh: left behind after teardown: $left" >&2
    [ "$status" -eq 0 ] && status=1
  fi
  exit "$status"
}
trap cleanup EXIT
# An interrupted run still tears down: exiting runs the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "docker/test.sh: FAIL: $*" >&2
  exit 1
}
step_start=$SECONDS
step() {
  echo "== $* (at ${SECONDS}s)"
}

# GET http://127.0.0.1:PORT/PATH with the cookie jar JAR; sets $code and $body. A connection
# failure is code 000.
request() {
  local port=$1 path=$2 jar=$3
  if [ "$http_client" = curl ]; then
    code=$(curl -sS --max-time 10 -b "$jar" -c "$jar" -o "$work/body" -w '%{http_code}' \
      "http://127.0.0.1:$port$path" 2>"$work/err") || code=000
  else
    code=$(python3 - "$port" "$path" "$jar" "$work/body" 2>"$work/err" <<'EOF'
import http.cookiejar, os, sys, urllib.error, urllib.request
port, path, jar_file, body_file = sys.argv[1:]
jar = http.cookiejar.MozillaCookieJar(jar_file)
if os.path.exists(jar_file):
    jar.load(ignore_discard=True, ignore_expires=True)
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
try:
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
except OSError as e:
    print(e, file=sys.stderr)
    code, body = 0, b""
jar.save(ignore_discard=True, ignore_expires=True)
open(body_file, "wb").write(body)
print(f"{code:03d}")
EOF
    ) || code=000
  fi
  body=$(cat "$work/body" 2>/dev/null || true)
}

# Asserts that GET PATH through PORT answers 200 with exactly WANT. While the app or its
# connection to sessiond is still coming up (no answer, or a 5xx) it retries for up to 30 s;
# a 200 with another body fails at once: that is a lost or wrong session, not a slow start.
expect() {
  local port=$1 path=$2 jar=$3 want=$4 deadline=$((SECONDS + 30)) tries=0
  while :; do
    request "$port" "$path" "$jar"
    tries=$((tries + 1))
    if [ "$code" = 200 ]; then
      [ "$body" = "$want" ] || fail "GET :$port$path answered '$body', expected '$want'"
      echo "   GET :$port$path -> $body$([ "$tries" -gt 1 ] && echo " (attempt $tries)")"
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      fail "GET :$port$path: no 200 within 30 s (last: $code $body $(cat "$work/err"))"
    sleep 0.5
  done
}

# Waits (at most 90 s: the healthcheck runs every 5 s) for the container's health to be
# "healthy"; fails at once if the container exits.
wait_healthy() {
  local cid=$1 deadline=$((SECONDS + 90)) state health
  while :; do
    state=$(docker inspect -f '{{.State.Status}}' "$cid")
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid")
    [ "$health" = healthy ] && return 0
    case "$state" in
      exited | dead) fail "container $cid is $state (exit $(docker inspect -f '{{.State.ExitCode}}' "$cid"))" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || fail "container $cid not healthy after 90 s (status: $health)"
    sleep 0.5
  done
}

host_port() {
  local mapping
  mapping=$(compose port "$1" "$2")
  echo "${mapping##*:}"
}

# The value of STATS counter NAME of container CID, read as operators do: `docker exec`,
# the plain listener on the container's loopback, user monitor. Call it as `x=$(...)`, so
# that a failure stops the script.
stats_value() {
  local out
  out=$(docker exec "$1" /usr/local/bin/sessiond-cli --addr 127.0.0.1:7878 \
    --user monitor --password-file /run/secrets/sessiond_monitor_password stats 2>&1) ||
    fail "sessiond-cli stats in $1: $out"
  awk -v name="$2" '$1 == name { print $2 }' <<<"$out"
}

# Waits (at most 10 s) until sessiond's log holds COUNT lines saying the TLS files were
# reloaded.
wait_reloads() {
  local want=$1 deadline=$((SECONDS + 10)) seen
  while :; do
    seen=$(compose logs --no-color sessiond 2>&1 | grep -c 'TLS certificates reloaded' || true)
    [ "$seen" -ge "$want" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || fail "SIGHUP: $seen reloads logged after 10 s, expected $want"
    sleep 0.2
  done
}

# Runs sessiond-cli ARGS... in a container of its own on the project's network, where an
# app server would be. /in holds what a client might have: ca.pem, the two passwords, a
# wrong one, and the CA of step 3's renewed certificate (other-ca.pem).
network_cli() {
  docker run --rm --network "$network" --read-only --cap-drop ALL \
    --volume "$work/in:/in:ro" --entrypoint /usr/local/bin/sessiond-cli \
    "$SESSIOND_IMAGE" --timeout 5s "$@"
}

# `expect_cli STATUS PATTERN ARGS...`: sessiond-cli ARGS... (network_cli) must exit with
# STATUS, its output matching the extended regex PATTERN.
expect_cli() {
  local want=$1 pattern=$2 status=0 out
  shift 2
  out=$(network_cli "$@" 2>&1) || status=$?
  if [ "$status" != "$want" ] || ! grep -qE "$pattern" <<<"$out"; then
    fail "sessiond-cli $*: exit $status, '$out'; expected exit $want and /$pattern/"
  fi
  echo "   sessiond-cli $* -> exit $status: $out"
}

step "building the images"
build_start=$SECONDS
"$repo/docker/build.sh"
build_secs=$((SECONDS - build_start))
echo "   build took $build_secs s"

step "making passwords and certificates"
"$repo/scripts/compose-secrets" "$SESSIOND_SECRETS"
# Another CA, and a certificate for "sessiond" that it signed: step 3's renewal.
"$repo/scripts/gen-certs" "$work/renewed" sessiond >/dev/null
# The client side of steps 2 and 3: readable by the uid the CLI's container runs as (65532).
mkdir -m 0755 "$work/in"
cp "$SESSIOND_SECRETS/ca.pem" "$SESSIOND_SECRETS/app_password" \
  "$SESSIOND_SECRETS/monitor_password" "$work/in/"
cp "$work/renewed/ca.pem" "$work/in/other-ca.pem"
echo "not-the-password" >"$work/in/wrong_password"
chmod 0644 "$work/in/"*
# The image's sessiond-cli, for the host (it is statically linked).
cid=$(docker create "$SESSIOND_IMAGE")
docker cp "$cid:/usr/local/bin/sessiond-cli" "$work/sessiond-cli" >/dev/null
docker rm --volumes "$cid" >/dev/null

step "starting the compose project $project"
compose up -d
sessiond=$(compose ps -q sessiond)
[ -n "$sessiond" ] || fail "no sessiond container"
wait_healthy "$sessiond"
[ "$(docker inspect -f '{{.Config.User}}' "$sessiond")" = 65532:65532 ] ||
  fail "sessiond does not run as 65532:65532"
fsync=$(stats_value "$sessiond" aof_fsync)
[ "$fsync" = everysec ] || fail "aof_fsync is '$fsync', not the image's everysec"
app1=$(host_port app1 8000)
app2=$(host_port app2 8000)
network=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}' \
  "$sessiond")
echo "   sessiond healthy; app1 on 127.0.0.1:$app1, app2 on 127.0.0.1:$app2; network $network"

step "1. a session created through replica 1 is read through replica 2"
expect "$app1" / "$work/jar1" "Session data set!"
expect "$app2" /get "$work/jar1" "Username: Alice"
# The control: without the cookie, replica 2 knows no user.
expect "$app2" /get "$work/jar-none" "Username: not set"

step "2. authentication and TLS on the container network"
# The healthcheck that made sessiond healthy: `sessiond health`, which asks the metrics
# listener for /health/ready (docs/METRICS.md), and it passed.
healthcheck=$(docker inspect -f '{{json .Config.Healthcheck.Test}}' "$sessiond")
for arg in '"health"' '"127.0.0.1:9187"'; do
  [[ "$healthcheck" == *"$arg"* ]] || fail "the healthcheck $healthcheck lacks $arg"
done
last_check=$(docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}' \
  "$sessiond" | grep -v '^$' | tail -n 1)
[ "$last_check" = "0 ready" ] || fail "the last healthcheck answered '$last_check'"
echo "   healthcheck: /health/ready, last result '$last_check'"
tls=(--addr sessiond:7879 --tls --cacert /in/ca.pem)
as_app=(--user app --password-file /in/app_password)
as_monitor=(--user monitor --password-file /in/monitor_password)
failures_before=$(stats_value "$sessiond" auth_failures)
# The control: the right credentials work from here (the key just does not exist).
expect_cli 1 '^NOT_FOUND' "${tls[@]}" "${as_app[@]}" get probe
expect_cli 2 'AUTH_REQUIRED' "${tls[@]}" get probe
expect_cli 2 'AUTH_FAILED' "${tls[@]}" --user app --password-file /in/wrong_password get probe
# Another user's password, under a user name that does not exist: the same answer.
expect_cli 2 'AUTH_FAILED' "${tls[@]}" --user admin --password-file /in/app_password get probe
expect_cli 2 'NO_PERMISSION.*STATS' "${tls[@]}" "${as_app[@]}" stats
expect_cli 2 'NO_PERMISSION.*GET' "${tls[@]}" "${as_monitor[@]}" get probe
failures=$(stats_value "$sessiond" auth_failures)
[ "$failures" -ge $((failures_before + 2)) ] ||
  fail "STATS auth_failures went from $failures_before to $failures, expected +2"
echo "   STATS auth_failures: $failures_before -> $failures"
# Plain TCP to the TLS port: the server sees no ClientHello and ends the connection.
expect_cli 2 '^error: ' --addr sessiond:7879 "${as_app[@]}" ping
# The plain listener is bound to the container's loopback: nothing answers on the network.
expect_cli 2 '[Rr]efused' --addr sessiond:7878 ping
expect_cli 2 'UnknownIssuer' --addr sessiond:7879 --tls --cacert /in/other-ca.pem ping
# Nothing has logged a password, whatever it logged about the failures above.
logs=$(compose logs --no-color 2>&1)
for secret in "$SESSIOND_SECRETS/app_password" "$SESSIOND_SECRETS/monitor_password" \
  "$work/in/wrong_password"; do
  ! grep -qF -f "$secret" <<<"$logs" || fail "a container's log shows the password in $secret"
done
echo "   no password in the logs ($(wc -l <<<"$logs") lines)"
# From the host through the published port, as README.md shows (the certificate is valid
# for 127.0.0.1 too).
port=$(host_port sessiond 7879)
out=$("$work/sessiond-cli" --addr "127.0.0.1:$port" --tls --cacert "$SESSIOND_SECRETS/ca.pem" \
  --user monitor --password-file "$SESSIOND_SECRETS/monitor_password" stats 2>&1) ||
  fail "sessiond-cli stats from the host through 127.0.0.1:$port: $out"
grep -q '^auth_failures ' <<<"$out" || fail "no auth_failures in STATS from the host: $out"
echo "   from the host: STATS over TLS as monitor through 127.0.0.1:$port"

step "3. a renewed certificate, reloaded on SIGHUP, for new connections only"
# Copied over the mounted files, as README.md tells operators: cp rewrites the file in
# place, and a secret is a bind mount of that very file (one replaced by a rename would
# not be seen inside the container).
cp "$SESSIOND_SECRETS/server.pem" "$work/server.pem.first"
cp "$SESSIOND_SECRETS/server.key" "$work/server.key.first"
cp "$work/renewed/server.pem" "$SESSIOND_SECRETS/server.pem"
cp "$work/renewed/server.key" "$SESSIOND_SECRETS/server.key"
docker kill -s HUP "$sessiond" >/dev/null
wait_reloads 1
expect_cli 0 '^PONG$' --addr sessiond:7879 --tls --cacert /in/other-ca.pem ping
expect_cli 2 'UnknownIssuer' "${tls[@]}" ping
# The replicas trust only the first CA, so these work only over the connections they
# opened before the reload.
expect "$app2" /get "$work/jar1" "Username: Alice"
expect "$app1" /get "$work/jar1" "Username: Alice"
# Back to the first certificate, which the healthcheck and the replicas trust.
cp "$work/server.pem.first" "$SESSIOND_SECRETS/server.pem"
cp "$work/server.key.first" "$SESSIOND_SECRETS/server.key"
docker kill -s HUP "$sessiond" >/dev/null
wait_reloads 2
expect_cli 0 '^PONG$' "${tls[@]}" ping

step "4. docker stop (graceful), docker start: the session is still there"
# Written just before the stop: a shutdown that skipped the final write and fsync of the
# append-only file could lose it.
expect "$app1" / "$work/jar2" "Session data set!"
stop_start=$(date +%s%N)
docker stop "$sessiond" >/dev/null
stop_ms=$((($(date +%s%N) - stop_start) / 1000000))
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$sessiond")
# 137 would mean Docker's SIGKILL after the grace period.
[ "$exit_code" = 0 ] || fail "sessiond exited $exit_code on docker stop, expected 0"
[ "$stop_ms" -lt 10000 ] || fail "docker stop took $stop_ms ms"
echo "   stopped in $stop_ms ms, exit 0"
docker start "$sessiond" >/dev/null
wait_healthy "$sessiond"
expect "$app2" /get "$work/jar1" "Username: Alice"
expect "$app1" /get "$work/jar2" "Username: Alice"

step "5. fsync=always, docker kill -s KILL, docker start: the acknowledged session is there"
# Changing the environment makes compose recreate the container, on the same volume.
SESSIOND_FSYNC=always compose up -d --no-deps sessiond
sessiond=$(compose ps -q sessiond)
wait_healthy "$sessiond"
fsync=$(stats_value "$sessiond" aof_fsync)
[ "$fsync" = always ] || fail "SESSIOND_FSYNC=always not in effect (aof_fsync is '$fsync')"
expect "$app1" / "$work/jar3" "Session data set!"
# At once: the 200 above means sessiond answered the write, which with fsync=always it does
# only after the fsync.
docker kill -s KILL "$sessiond" >/dev/null
docker wait "$sessiond" >/dev/null
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$sessiond")
[ "$exit_code" = 137 ] || fail "sessiond exited $exit_code after SIGKILL, expected 137"
# `docker start` of a running container is a no-op, should the restart policy have been first.
docker start "$sessiond" >/dev/null
wait_healthy "$sessiond"
expect "$app2" /get "$work/jar3" "Username: Alice"
expect "$app2" /get "$work/jar2" "Username: Alice"
expect "$app2" /get "$work/jar1" "Username: Alice"

step "6. three nodes (docker/compose.cluster.yaml): spread, fail closed per node, back"
cluster_start=$SECONDS
# The single-node project is done; its containers would only compete for the CPUs.
compose down --volumes --timeout 10 >/dev/null 2>&1
project=$cluster_project
compose_file=compose.cluster.yaml
# One certificate valid for the three nodes' names; compose-secrets adds the passwords and
# keeps it.
export SESSIOND_SECRETS="$work/cluster-secrets"
"$repo/scripts/gen-certs" "$SESSIOND_SECRETS" sessiond-0 sessiond-1 sessiond-2 >/dev/null
"$repo/scripts/compose-secrets" "$SESSIOND_SECRETS" >/dev/null
unset SESSIOND_FSYNC
compose up -d
nodes=()
for i in 0 1 2; do
  nodes+=("$(compose ps -q "sessiond-$i")")
  [ -n "${nodes[$i]}" ] || fail "no sessiond-$i container"
done
for cid in "${nodes[@]}"; do
  wait_healthy "$cid"
done
app1=$(host_port app1 8000)
app2=$(host_port app2 8000)
echo "   three nodes healthy; app1 on 127.0.0.1:$app1, app2 on 127.0.0.1:$app2"
users=30
for ((u = 0; u < users; u++)); do
  expect "$app1" / "$work/cluster-jar$u" "Session data set!" >/dev/null
  expect "$app2" /get "$work/cluster-jar$u" "Username: Alice" >/dev/null
done
entries=()
for i in 0 1 2; do
  entries+=("$(stats_value "${nodes[$i]}" entries)")
  [ "${entries[$i]}" -gt 0 ] || fail "sessiond-$i holds none of the $users sessions"
done
total=$((entries[0] + entries[1] + entries[2]))
[ "$total" -eq "$users" ] || fail "the nodes hold $total sessions (${entries[*]}), expected $users"
echo "   $users users through app1, read through app2; sessions per node: ${entries[*]}"

# sessiond-1 stopped: its users get 503 (session store unavailable), each at once; the
# other nodes' users are served as before. Nobody is silently logged out.
docker stop "${nodes[1]}" >/dev/null
ok=0 unavailable=0 slowest_ms=0
for ((u = 0; u < users; u++)); do
  started=$(date +%s%N)
  request "$app2" /get "$work/cluster-jar$u"
  ms=$((($(date +%s%N) - started) / 1000000))
  [ "$ms" -gt "$slowest_ms" ] && slowest_ms=$ms
  case "$code" in
    200)
      [ "$body" = "Username: Alice" ] || fail "user $u with sessiond-1 down: '$body'"
      ok=$((ok + 1))
      ;;
    503) unavailable=$((unavailable + 1)) ;;
    *) fail "user $u with sessiond-1 down: $code '$body'" ;;
  esac
done
[ "$unavailable" -eq "${entries[1]}" ] && [ "$ok" -eq $((users - entries[1])) ] ||
  fail "with sessiond-1 down: $ok served, $unavailable unavailable; expected ${entries[1]} unavailable"
[ "$slowest_ms" -lt 5000 ] || fail "with sessiond-1 down a request took $slowest_ms ms"
echo "   sessiond-1 stopped: $ok users served, $unavailable got 503 (slowest request $slowest_ms ms)"

docker start "${nodes[1]}" >/dev/null
wait_healthy "${nodes[1]}"
for ((u = 0; u < users; u++)); do
  expect "$app1" /get "$work/cluster-jar$u" "Username: Alice" >/dev/null
done
echo "   sessiond-1 started again: all $users users served (cluster phase $((SECONDS - cluster_start)) s)"

echo "== PASSED in $((SECONDS - step_start)) s, of which $build_secs s building the images"
