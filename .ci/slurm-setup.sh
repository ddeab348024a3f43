#!/usr/bin/env bash
# A real one-node Slurm on localhost for the cluster tests (recipe: ../shared/slurm-local.md).
# Installs slurm-wlm and munge from Debian when missing, writes a munge key and slurm.conf sized
# from this machine, starts munged, slurmctld and slurmd, and waits until `sinfo` shows the node
# idle. Safe to run twice: a node that already answers idle means there is nothing to do.
# Must run as root (the daemons run as root: SlurmUser=root).
set -euo pipefail

# How long to wait for the daemons, in seconds (polled, not slept).
READY_TIMEOUT_S="${SLURM_READY_TIMEOUT_S:-90}"

node="$(hostname -s)"

log() { echo "slurm-setup: $*"; }

node_state() {
  # The node's state as sinfo prints it (idle, mix, alloc, down*, ...), empty when slurmctld does
  # not answer.
  sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n1 || true
}

wait_until_idle() {
  local deadline=$((SECONDS + READY_TIMEOUT_S)) state=""
  while ((SECONDS < deadline)); do
    state="$(node_state)"
    case "$state" in
      idle | mix | mixed | alloc | allocated) return 0 ;;
      down* | drain* | fail*)
        # ReturnToService=2 brings a registered node back on its own; an explicit resume
        # covers a node left down by an earlier run's state files.
        scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
        ;;
    esac
    sleep 0.5 # a poll interval, not a synchronisation
  done
  log "node $node did not become idle within ${READY_TIMEOUT_S}s (last state: '${state:-no answer}')"
  log "logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd.log"
  sinfo -N -l 2>&1 || true
  return 1
}

if [[ "$(id -u)" != 0 ]]; then
  log "must run as root (it installs packages and starts slurmctld, slurmd and munged)"
  exit 2
fi

if command -v sinfo >/dev/null 2>&1; then
  case "$(node_state)" in
    idle | mix | mixed | alloc | allocated)
      log "already running: node $node is $(node_state); nothing to do"
      exit 0
      ;;
  esac
fi

start=$SECONDS

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: one key shared by the controller and the node daemon (both local).
if [[ ! -s /etc/munge/munge.key ]]; then
  log "writing /etc/munge/munge.key"
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
  log "starting munged"
  # --force: start even when the key's directory permissions are looser than munged likes
  # (containers); the key itself is 0400.
  su -s /bin/sh munge -c 'munged --force' 2>/dev/null || munged --force
fi

# slurm.conf sized from this machine: every CPU, memory less 1 GiB for the system.
cpus="$(nproc)"
mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
real_mb=$((mem_mb > 2048 ? mem_mb - 1024 : mem_mb / 2))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf=/etc/slurm/slurm.conf
want="$(
  cat <<EOF
# Written by .ci/slurm-setup.sh: a one-node cluster on localhost.
ClusterName=local
SlurmctldHost=${node}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
NodeName=${node} CPUs=${cpus} RealMemory=${real_mb} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
)"
if [[ ! -f "$conf" ]] || [[ "$(cat "$conf")" != "$want" ]]; then
  log "writing $conf (CPUs=$cpus RealMemory=${real_mb}MB)"
  printf '%s\n' "$want" >"$conf"
fi

# Start whichever daemon is not running (pid files the daemons write themselves).
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! alive /run/slurmctld.pid; then
  log "starting slurmctld"
  slurmctld
fi
if ! alive /run/slurmd.pid; then
  log "starting slurmd"
  slurmd
fi

wait_until_idle
log "node $node is $(node_state) (took $((SECONDS - start))s)"
