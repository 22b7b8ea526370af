#!/usr/bin/env bash
# Tear down the private Slurm cluster started by scripts/slurm/up.sh.
# Cancels remaining jobs, then stops slurmd, slurmctld and munged by their
# recorded pids. Idempotent. Keeps $COCOFLOW_SLURM_DIR (logs, state); pass
# --purge to delete it as well.
set -uo pipefail

DIR="${COCOFLOW_SLURM_DIR:-/tmp/cocoflow-slurm}"
CONF="$DIR/slurm.conf"
log() { echo "slurm/down.sh: $*" >&2; }

running() { # running PID -> 0 if PID is a live, non-zombie process
  [ -r "/proc/$1/stat" ] || return 1
  # field 3 of /proc/PID/stat is the state; Z = zombie (PID 1 may not reap).
  case "$(sed -E 's/^[0-9]+ \(.*\) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" in
    Z|X|"") return 1 ;;
  esac
  return 0
}

pid_of() { # pid_of PIDFILE -> prints pid if alive
  local p
  [ -s "$1" ] || return 1
  p="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$p" ] && running "$p" && echo "$p"
}

stop() { # stop NAME PIDFILE
  local p
  p="$(pid_of "$2")" || { rm -f "$2"; return 0; }
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 100); do running "$p" || break; sleep 0.1; done
  if running "$p"; then
    log "$1 (pid $p) ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$p" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$2"
  log "stopped $1 (pid $p)"
}

if [ -f "$CONF" ] && pid_of "$DIR/run/slurmctld.pid" >/dev/null; then
  export SLURM_CONF="$CONF"
  jobs="$(timeout 10 squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    # Wait (KillWait=2) until no job is left running/completing.
    for _ in $(seq 100); do
      left="$(timeout 5 squeue -h -t PD,R,CG,S,CF -o '%i' 2>/dev/null)"
      [ -z "$left" ] && break
      sleep 0.2
    done
  fi
  # Make sure no job process is left (slurmd sends SIGKILL max(KillWait,5)s
  # after SIGTERM); `scontrol listpids` asks the local slurmd.
  if pid_of "$DIR/run/slurmd.pid" >/dev/null; then
    for _ in $(seq 75); do
      n="$(timeout 5 scontrol listpids 2>/dev/null | tail -n +2 | wc -l)"
      [ "$n" = 0 ] && break
      sleep 0.2
    done
  fi
fi

stop slurmd "$DIR/run/slurmd.pid"
stop slurmctld "$DIR/run/slurmctld.pid"
stop munged "$DIR/run/munged.pid"

if [ "${1:-}" = "--purge" ]; then
  rm -rf "$DIR"
  log "removed $DIR"
fi
exit 0
