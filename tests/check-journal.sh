#!/bin/sh
# check-journal.sh GT RECEIVER: under systemd (stderr connected to the journal), the
# entries of the manager and its workers reach the journal with GT_CONFIG, GT_KIND, GT_USER and,
# for lines about one service, GT_SERVICE; no field of any entry holds a secret. A private mount
# namespace puts RECEIVER (a stand-in for journald) at /run/systemd/journal/, where GLib's
# journald writer sends, and gt runs with stderr connected to its stream socket. Output: TAP.
set -eu

GT=$1
RECEIVER=$2

for tool in unshare python3 curl; do
  if ! command -v $tool >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool not installed"
    exit 77
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "1..0 # SKIP needs root for a private mount namespace"
  exit 77
fi
if [ -z "${GT_CHECK_JOURNAL_NS:-}" ]; then
  export GT_CHECK_JOURNAL_NS=1
  exec unshare -m "$0" "$@"
fi
# Private to this namespace: a tmpfs over /run/systemd (or /run) holds the journal socket.
mount --make-rprivate /
if [ -d /run/systemd ]; then RUNDIR=/run/systemd; else RUNDIR=/run; fi
mount -t tmpfs tmpfs "$RUNDIR"
mkdir -p /run/systemd/journal

T=$(mktemp -d "${TMPDIR:-/tmp}/gt-journal.XXXXXX")
RECV_PID=
GT_PID=
cleanup() {
  [ -n "$GT_PID" ] && kill "$GT_PID" 2>/dev/null || true
  [ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT INT TERM
mkdir -m 0700 "$T/cfg" "$T/run"
SECRET=journal-test-secret-7f3a
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
DEAD=$(free_port) # nothing listens there: the client's dial fails
cat > "$T/cfg/server.yaml" <<YAML
type: server
users:
  desk:
    secret: $SECRET
options:
  addr: 127.0.0.1:$PORT
YAML
cat > "$T/cfg/client.yaml" <<YAML
type: client
options:
  id: desk
  secret: $SECRET
  remote: tcp://127.0.0.1:$PORT
  reconnectDelay: 100ms
services:
  - local: http://127.0.0.1:$DEAD
    hostPrefix: web
YAML

n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1))
  echo "not ok $n - $1"
  fail=1
  tail -20 "$T/journal.jsonl" 2>/dev/null | sed 's/^/# journal: /'
  tail -5 "$T/journal.jsonl.stream" 2>/dev/null | sed 's/^/# stderr: /'
}
wait_for() {
  i=0
  limit=$(($1 * 10))
  shift
  while [ $i -lt $limit ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}
# has_entry KEY=VALUE...: one journal entry with all these fields (VALUE a Python regex).
has_entry() {
  python3 - "$T/journal.jsonl" "$@" <<'PY'
import json, re, sys
want = [a.split("=", 1) for a in sys.argv[2:]]
for line in open(sys.argv[1]):
    e = json.loads(line)
    if all(k in e and re.search(v, e[k]) for k, v in want):
        sys.exit(0)
sys.exit(1)
PY
}

python3 "$RECEIVER" /run/systemd/journal "$T/journal.jsonl" &
RECV_PID=$!
wait_for 10 test -S /run/systemd/journal/socket || { echo "not ok 1 - receiver"; exit 1; }
# stderr connected to the journal's stream socket, as systemd does for a service.
GT_RUNTIME_DIR=$T/run python3 "$RECEIVER" --run /run/systemd/journal "$GT" -c "$T/cfg" --no-dbus &
GT_PID=$!

if wait_for 15 has_entry GT_KIND=^manager$ "GT_CONFIG=^$T/cfg$" PRIORITY=. MESSAGE=.; then
  ok "manager entries carry GT_KIND=manager and GT_CONFIG"
else
  not_ok "no manager entry"
fi
if wait_for 15 has_entry GT_KIND=^server$ "GT_CONFIG=server.yaml$"; then
  ok "server worker entries carry GT_KIND=server and its GT_CONFIG"
else
  not_ok "no server entry"
fi
if wait_for 15 has_entry GT_KIND=^client$ GT_USER=^desk$ "GT_CONFIG=client.yaml$"; then
  ok "client worker entries carry GT_KIND=client, GT_USER and GT_CONFIG"
else
  not_ok "no client entry"
fi
# A request the client cannot pass on: the line names the service in GT_SERVICE.
request() {
  curl -s -o /dev/null -H 'Host: web.example.com' "http://127.0.0.1:$PORT/" || true
  has_entry GT_KIND=^client$ GT_USER=^desk$ "GT_SERVICE=^http://127.0.0.1:$DEAD$" \
    "MESSAGE=cannot connect to http://127.0.0.1:$DEAD" PRIORITY=^5$
}
if wait_for 15 request; then
  ok "a line about a service carries GT_SERVICE"
else
  not_ok "no entry with GT_SERVICE"
fi
if grep -q "cannot connect" "$T/journal.jsonl.stream"; then
  not_ok "the entries went to stderr instead of the journal"
else
  ok "stderr holds no entry (they went to the journal)"
fi
if grep -q "$SECRET" "$T/journal.jsonl" "$T/journal.jsonl.stream"; then
  not_ok "a secret reached the journal"
else
  ok "no field of any entry holds the secret ($(wc -l < "$T/journal.jsonl") entries)"
fi
echo "1..$n"
exit $fail
