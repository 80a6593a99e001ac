#!/bin/sh
# check-app.sh GT GT_DESKTOP: the desktop app against a real gt manager, on a private session bus
# (dbus-run-session) and display (xvfb-run): the tunnel list shows the test tunnel, a service is
# edited and saved (the daemon's file changes), a wrong value is refused with the error next to
# its field, and screenshots of the main window and the editor go to $GT_TEST_LOG_DIR. The app is
# driven through its exported window actions (GT_APP_AUTOMATION=1), not by clicking pixels.
set -eu

GT=$1
APP=$2
LOGDIR=${GT_TEST_LOG_DIR:-$(pwd)}

for tool in dbus-run-session xvfb-run gdbus; do
  if ! command -v $tool >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool not installed"
    exit 77
  fi
done
if [ -z "${GT_CHECK_APP_BUS:-}" ]; then
  export GT_CHECK_APP_BUS=1
  exec dbus-run-session -- "$0" "$@"
fi
if [ -z "${GT_CHECK_APP_DISPLAY:-}" ]; then
  export GT_CHECK_APP_DISPLAY=1
  exec xvfb-run -a -s "-screen 0 1024x768x24" "$0" "$@"
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/gt-app.XXXXXX")
GT_PID=
APP_PID=
KEYRING_PID=
cleanup() {
  [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true
  [ -n "$GT_PID" ] && kill "$GT_PID" 2>/dev/null || true
  [ -n "$KEYRING_PID" ] && kill "$KEYRING_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT INT TERM
mkdir -m 0700 "$T/cfg" "$T/run"
mkdir -p "$LOGDIR"
cat > "$T/cfg/client.yaml" <<YAML
type: client
options:
  remote: tcp://127.0.0.1:9
  id: desk
  secret: app-test-secret
services:
  - local: http://127.0.0.1:8081
    hostPrefix: blog
YAML

n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1))
  echo "not ok $n - $1"
  fail=1
  sed 's/^/# gt: /' "$T/gt.log" | tail -20
  sed 's/^/# app: /' "$T/app.log" | tail -20
}

# A keyring of the test's own when gnome-keyring is installed: the daemon then moves the secret
# there on save. Without one, it stays in the 0600 file (GT_KEYRING=off: no keyring is tried).
KEYRING=
if command -v gnome-keyring-daemon >/dev/null 2>&1 && command -v secret-tool >/dev/null 2>&1; then
  mkdir -m 0700 "$T/home" "$T/home/run"
  printf test | HOME=$T/home XDG_DATA_HOME=$T/home XDG_RUNTIME_DIR=$T/home/run \
    gnome-keyring-daemon --foreground --unlock --components=secrets > "$T/keyring.log" 2>&1 &
  KEYRING_PID=$!
  KEYRING=1
  export GT_KEYRING=on
else
  export GT_KEYRING=off
fi
GT_RUNTIME_DIR=$T/run GT_MANAGER_READY_TIMEOUT=2s "$GT" -c "$T/cfg" > "$T/gt.log" 2>&1 &
GT_PID=$!
GT_APP_AUTOMATION=1 GSK_RENDERER=cairo NO_AT_BRIDGE=1 GTK_A11Y=none LANGUAGE=C \
  "$APP" > "$T/app.out" 2> "$T/app.log" &
APP_PID=$!

# wait_for SECONDS COMMAND...: until COMMAND succeeds.
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
has_name() { grep -q '^automation: ' "$T/app.out"; }
if wait_for 30 has_name; then ok "the app exports its actions"; else not_ok "no automation line"; exit 1; fi
NAME=$(sed -n 's/^automation: //p' "$T/app.out")

actions() { gdbus call --session -d "$NAME" -o /io/github/gtrelay/Gt/App -m "org.gtk.Actions.$@"; }
activate() { actions Activate "$1" "$2" "{}"; }
state_has() { actions Describe "$1" | grep -q -- "$2"; }

if wait_for 30 state_has visible-tunnels "client.yaml="; then
  ok "the tunnel list shows client.yaml"
else
  not_ok "the tunnel list never showed client.yaml"
fi
sleep 0.5
activate screenshot "[<'$LOGDIR/app-main-window.png'>]"

# The details page lists the client's tunnel connections (ConnectionList).
activate show-tunnel "[<'client.yaml'>]"
if wait_for 20 state_has visible-connections "desk#0="; then
  ok "the details page lists the tunnel connections"
else
  not_ok "no connection rows: $(actions Describe visible-connections)"
fi
sleep 0.3
activate screenshot "[<'$LOGDIR/app-details.png'>]"

activate edit-tunnel "[<'client.yaml'>]"
if wait_for 20 state_has editing "'client.yaml'"; then ok "the editor loads client.yaml"; else not_ok "the editor did not load"; fi
# A wrong value: refused by the daemon's validation, the file stays.
activate set-field "[<('remote', 'tcp://127.0.0.1:99999')>]"
activate save "[]"
if wait_for 20 state_has last-save "client.yaml:3:"; then
  ok "a bad remote is refused with its line"
else
  not_ok "a bad remote was not refused: $(actions Describe last-save)"
fi
sleep 0.3
activate screenshot "[<'$LOGDIR/app-editor-error.png'>]"
if grep -q 'remote: tcp://127.0.0.1:9$' "$T/cfg/client.yaml"; then ok "the file is unchanged"; else not_ok "the file changed"; fi

activate set-field "[<('remote', 'tcp://127.0.0.1:9')>]"
activate set-field "[<('service.0.hostPrefix', 'news')>]"
sleep 0.3
activate screenshot "[<'$LOGDIR/app-editor.png'>]"
activate save "[]"
if wait_for 20 state_has last-save "'ok'"; then ok "the edit was saved"; else not_ok "save failed: $(actions Describe last-save)"; fi
if grep -q 'hostPrefix: "news"' "$T/cfg/client.yaml" && [ "$(stat -c %a "$T/cfg/client.yaml")" = 600 ]; then
  ok "the daemon's file has the new service, mode 0600"
else
  not_ok "the file is not as expected: $(cat "$T/cfg/client.yaml")"
fi
if [ -n "$KEYRING" ]; then
  if ! grep -q 'app-test-secret' "$T/cfg/client.yaml" && grep -q 'secret: "(keyring)"$' "$T/cfg/client.yaml" \
    && [ "$(secret-tool lookup config "$T/cfg/client.yaml")" = app-test-secret ]; then
    ok "with a keyring, the secret moved there and out of the file"
  else
    not_ok "keyring: file $(grep secret "$T/cfg/client.yaml"), item $(secret-tool lookup config "$T/cfg/client.yaml" 2>&1)"
  fi
elif grep -q 'secret: app-test-secret$' "$T/cfg/client.yaml"; then
  ok "without a keyring, the file keeps the secret"
else
  not_ok "the secret is not in the file: $(grep secret "$T/cfg/client.yaml")"
fi
if wait_for 20 grep -q 'client.yaml changed' "$T/gt.log"; then ok "the daemon reloaded it"; else not_ok "no reload"; fi

# A new server configuration from the form: the daemon writes it and runs it.
SRV_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
activate new-config "[<'server'>]"
if wait_for 10 state_has editing "''"; then ok "the editor opens for a new server"; else not_ok "no editor for a new server"; fi
activate set-field "[<('name', 'relay.yaml')>]"
activate set-field "[<('addr', '127.0.0.1:$SRV_PORT')>]"
activate set-field "[<('user.0.id', 'desk')>]"
activate set-field "[<('user.0.secret', 'server-side-secret')>]"
sleep 0.3
activate screenshot "[<'$LOGDIR/app-editor-server.png'>]"
activate save "[]"
if wait_for 20 state_has last-save "'ok'"; then ok "the new server was saved"; else not_ok "save failed: $(actions Describe last-save)"; fi
if grep -q "addr: \"127.0.0.1:$SRV_PORT\"" "$T/cfg/relay.yaml" 2>/dev/null && grep -q '^  "desk":$' "$T/cfg/relay.yaml" \
  && [ "$(stat -c %a "$T/cfg/relay.yaml")" = 600 ]; then
  ok "the daemon wrote relay.yaml (mode 0600)"
else
  not_ok "relay.yaml: $(cat "$T/cfg/relay.yaml" 2>&1)"
fi
if wait_for 20 state_has visible-tunnels "relay.yaml=running"; then
  ok "the list shows relay.yaml running"
else
  not_ok "relay.yaml not running: $(actions Describe visible-tunnels)"
fi
if wait_for 20 state_has last-toast "relay.yaml: Running"; then
  ok "a toast tells relay.yaml is running"
else
  not_ok "no state toast: $(actions Describe last-toast)"
fi

for png in app-main-window app-editor-server app-details app-editor app-editor-error; do
  if [ "$(head -c 8 "$LOGDIR/$png.png" 2>/dev/null | od -An -c | tr -d ' ')" = '211PNG\r\n032\n' ]; then
    ok "screenshot $png.png"
  else
    not_ok "screenshot $png.png missing"
  fi
done
echo "1..$n"
exit $fail
