#!/usr/bin/env bash
# The container deployment, tested for real: builds the images (docker/build.sh), brings up
# docker/compose.yaml (sessiond and two replicas of the example app) under a project name of
# its own, and checks that
#   1. a session created through replica 1 is read through replica 2;
#   2. after `docker stop` (SIGTERM: drain, flush, fsync) and `docker start` of sessiond the
#      session is still there;
#   3. with fsync=always, a session acknowledged just before `docker kill -s KILL` is there
#      after `docker start`.
# Whatever happens, it removes everything it created: containers, network, volume, images.
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

compose() {
  "${compose_cmd[@]}" --project-name "$project" --file "$repo/docker/compose.yaml" "$@"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ "$status" -ne 0 ]; then
    echo "== FAILED (exit $status); the containers' last logs:"
    compose logs --no-color --tail=40 2>&1
  fi
  echo "== tearing down $project"
  compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
  docker image rm "$SESSIOND_IMAGE" "$EXAMPLE_APP_IMAGE" >/dev/null 2>&1
  rm -rf "$work"
  # Prove it: nothing labelled with the project, and neither image, may remain.
  local label="label=com.docker.compose.project=$project" left
  left="$(docker ps -aq --filter "$label")$(docker network ls -q --filter "$label")"
  left+="$(docker volume ls -q --filter "$label")"
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

stats_value() {
  docker exec "$1" /usr/local/bin/sessiond-cli --addr 127.0.0.1:7878 stats |
    awk -v name="$2" '$1 == name { print $2 }'
}

step "building the images"
build_start=$SECONDS
"$repo/docker/build.sh"
build_secs=$((SECONDS - build_start))
echo "   build took $build_secs s"

step "starting the compose project $project"
compose up -d
sessiond=$(compose ps -q sessiond)
[ -n "$sessiond" ] || fail "no sessiond container"
wait_healthy "$sessiond"
[ "$(docker inspect -f '{{.Config.User}}' "$sessiond")" = 65532:65532 ] ||
  fail "sessiond does not run as 65532:65532"
[ "$(stats_value "$sessiond" aof_fsync)" = everysec ] || fail "not the image's fsync policy"
app1=$(host_port app1 8000)
app2=$(host_port app2 8000)
echo "   sessiond healthy; app1 on 127.0.0.1:$app1, app2 on 127.0.0.1:$app2"

step "1. a session created through replica 1 is read through replica 2"
expect "$app1" / "$work/jar1" "Session data set!"
expect "$app2" /get "$work/jar1" "Username: Alice"
# The control: without the cookie, replica 2 knows no user.
expect "$app2" /get "$work/jar-none" "Username: not set"

step "2. docker stop (graceful), docker start: the session is still there"
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

step "3. fsync=always, docker kill -s KILL, docker start: the acknowledged session is there"
# Changing the environment makes compose recreate the container, on the same volume.
SESSIOND_FSYNC=always compose up -d --no-deps sessiond
sessiond=$(compose ps -q sessiond)
wait_healthy "$sessiond"
[ "$(stats_value "$sessiond" aof_fsync)" = always ] || fail "SESSIOND_FSYNC=always not in effect"
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

echo "== PASSED in $((SECONDS - step_start)) s, of which $build_secs s building the images"
