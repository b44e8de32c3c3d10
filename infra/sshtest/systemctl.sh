#!/bin/sh
# A stand-in for systemctl where PID 1 is not systemd (this test machine):
# starts a unit's ExecStart as its User with its EnvironmentFile, as
# systemd would, and keeps a pid file per unit in $FAKE_SYSTEMD_DIR.
# Only what task deploy uses: daemon-reload, enable, start, stop, restart,
# is-active. As journalctl it prints a unit's output.
set -u
D=${FAKE_SYSTEMD_DIR:?}
mkdir -p "$D"
unitfile() {
  for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
    [ -f "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  echo "Unit $1 not found." >&2; return 5
}
key() { sed -n "s/^$1=//p" "$2" | head -n1; }
# running: the process exists and is not a zombie (this machine's PID 1
# may reap orphans late; kill -0 succeeds on zombies).
running() { [ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | grep -q '^Z'; }
alive() { [ -f "$D/$1.pid" ] && running "$(cat "$D/$1.pid")"; }
stop() {
  alive "$1" || return 0
  pid=$(cat "$D/$1.pid")
  kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid"
  i=0
  while running "$pid" && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  if running "$pid"; then
    echo "fake systemctl: $1 did not stop within 30s of SIGTERM: SIGQUIT (Go prints its goroutines), then SIGKILL" >>"$D/$1.log"
    kill -QUIT "$pid" 2>/dev/null
    i=0; while running "$pid" && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL -"$pid" 2>/dev/null
  else
    echo "fake systemctl: $1 stopped $((i/10)).$((i%10))s after SIGTERM" >>"$D/$1.log"
  fi
  rm -f "$D/$1.pid"
}
start() {
  alive "$1" && return 0
  f=$(unitfile "$1") || return 5
  user=$(key User "$f"); group=$(key Group "$f"); envf=$(key EnvironmentFile "$f")
  exe=$(key ExecStart "$f" | sed 's/^[-+@!:]*//')
  [ -n "$user" ] || user=root
  [ -n "$group" ] || group=$user
  for r in $(key RuntimeDirectory "$f"); do install -d -o "$user" -g "$group" "/run/$r"; done
  for s in $(key StateDirectory "$f"); do install -d -m 0700 -o "$user" -g "$group" "/var/lib/$s"; done
  envf=${envf#-}
  # systemd reads EnvironmentFile as root, then drops to User.
  (
    if [ -n "$envf" ]; then set -a; . "$envf"; set +a; fi
    exec setsid setpriv --reuid="$user" --regid="$group" --init-groups $exe
  ) >>"$D/$1.log" 2>&1 </dev/null &
  echo $! >"$D/$1.pid"
}
case "$(basename "$0")" in
journalctl)
  u=""; while [ $# -gt 0 ]; do case "$1" in -u) u=$2; shift;; esac; shift; done
  case "$u" in *.*) ;; *) u=$u.service;; esac
  tail -n 20 "$D/$u.log" 2>/dev/null; exit 0;;
esac
while [ $# -gt 0 ]; do case "$1" in --quiet|-q|--no-pager) shift;; *) break;; esac; done
cmd=${1:-}; shift || true
units=""
for u; do case "$u" in -*) ;; *.*) units="$units $u";; *) units="$units $u.service";; esac; done
set -- $units
case "$cmd" in
daemon-reload) exit 0;;
enable) for u; do touch "$D/$u.enabled"; done;;
start) for u; do start "$u" || exit $?; done;;
stop) for u; do stop "$u"; done;;
restart) for u; do stop "$u"; start "$u" || exit $?; done;;
is-active) for u; do if alive "$u"; then echo active; else echo inactive; exit 3; fi; done;;
*) echo "fake systemctl: $cmd not supported" >&2; exit 1;;
esac
