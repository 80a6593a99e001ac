#!/bin/sh
# check-system-bus.sh GT POLICY: `gt -c DIR --system-bus` on a private bus that enforces the
# system bus's default-deny policy with data/io.github.gtrelay.Gt.conf included: root owns the
# name and `gt status --system-bus` reads the tunnels; another user may read the properties but
# not send commands (AccessDenied). Output: TAP.
set -eu

GT=$1
POLICY=$2

for tool in dbus-daemon gdbus setpriv; do
  if ! command -v $tool >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool not installed"
    exit 77
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "1..0 # SKIP the policy grants the name to root only: run as root"
  exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/gt-sysbus.XXXXXX")
BUS_PID=
GT_PID=
cleanup() {
  [ -n "$GT_PID" ] && kill "$GT_PID" 2>/dev/null || true
  [ -n "$BUS_PID" ] && kill "$BUS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT INT TERM
chmod 0755 "$T"
mkdir -m 0700 "$T/cfg" "$T/run"
# The core of Debian's system.conf: deny by default, then the policy under test.
cat > "$T/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$T/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>$POLICY</include>
</busconfig>
XML
cat > "$T/cfg/client.yaml" <<YAML
type: client
options:
  remote: tcp://127.0.0.1:9
  id: sys
  secret: system-bus-test-secret
services:
  - local: http://127.0.0.1:9
    hostPrefix: sys
YAML

n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1))
  echo "not ok $n - $1"
  fail=1
  sed 's/^/# gt: /' "$T/gt.log" | tail -20
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

dbus-daemon --config-file="$T/bus.conf" --nofork --nopidfile > "$T/bus.log" 2>&1 &
BUS_PID=$!
if ! wait_for 10 test -S "$T/system_bus_socket"; then
  echo "not ok 1 - the private system bus started"
  sed 's/^/# /' "$T/bus.log"
  exit 1
fi
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$T/system_bus_socket"
unset DBUS_SESSION_BUS_ADDRESS

# Not a manager on the system bus: `gt status --system-bus` says so.
if out=$("$GT" status --system-bus 2>&1); then
  not_ok "gt status --system-bus fails without a manager ($out)"
elif echo "$out" | grep -q 'no gt manager on the system bus'; then
  ok "gt status --system-bus without a manager: $out"
else
  not_ok "unexpected message: $out"
fi

GT_RUNTIME_DIR=$T/run "$GT" -c "$T/cfg" --system-bus > "$T/gt.log" 2>&1 &
GT_PID=$!
status_has() { "$GT" status --system-bus 2>&1 | grep -q "$1"; }
if wait_for 20 status_has '^client\.yaml  *client '; then
  ok "root's gt owns the name; gt status --system-bus lists client.yaml"
else
  not_ok "gt status --system-bus: $("$GT" status --system-bus 2>&1 || true)"
fi

as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
call() {
  as_nobody gdbus call --system -d io.github.gtrelay.Gt -o /io/github/gtrelay/Gt "$@" 2>&1
}
if out=$(call -m org.freedesktop.DBus.ObjectManager.GetManagedObjects) \
  && echo "$out" | grep -q "'client.yaml'"; then
  ok "another user reads the tunnels"
else
  not_ok "another user cannot read the tunnels: $out"
fi
if out=$(call -m org.freedesktop.DBus.Properties.Get io.github.gtrelay.Gt.Manager1 Phase); then
  ok "another user reads a property ($out)"
else
  not_ok "another user cannot read Phase: $out"
fi
if out=$(call -m io.github.gtrelay.Gt.Manager1.StopTunnel client.yaml); then
  not_ok "another user stopped a tunnel"
elif echo "$out" | grep -q 'AccessDenied'; then
  ok "another user may not stop a tunnel (AccessDenied)"
else
  not_ok "unexpected error: $out"
fi
if out=$(gdbus call --system -d io.github.gtrelay.Gt -o /io/github/gtrelay/Gt \
  -m io.github.gtrelay.Gt.Manager1.StopTunnel client.yaml 2>&1) \
  && wait_for 20 status_has '^client\.yaml  *client  *stopped'; then
  ok "root stops a tunnel"
else
  not_ok "root could not stop the tunnel: $out"
fi
if grep -q 'system-bus-test-secret' "$T/gt.log"; then not_ok "the secret is in the log"; else ok "no secret in the log"; fi
echo "1..$n"
exit $fail
