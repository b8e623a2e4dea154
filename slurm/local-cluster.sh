#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for trying hpcinv without a cluster and for CI.
#
#   sudo slurm/local-cluster.sh up        install (Debian/Ubuntu packages) and start it
#   sudo slurm/local-cluster.sh status    what is running
#   sudo slurm/local-cluster.sh down      stop every daemon (state and accounting kept)
#   sudo slurm/local-cluster.sh purge     stop and delete state + accounting (job ids restart at 1)
#
# Exit status: 0 up; 3 the packages cannot be installed here (no root, no apt-get, no package
# source); 1 anything else (a daemon did not come up: see its log).
# What comes up: munged, MariaDB + slurmdbd (accounting, so `sacct` -- which submitit polls -- works),
# slurmctld and HPCINV_SLURM_NODES emulated compute nodes (n1, n2, ...; one slurmd each, all on this
# host at 127.0.0.1, each with HPCINV_SLURM_CPUS CPUs), in one partition "debug". Multi-node jobs
# (`sbatch -N 2`, `srun`) run for real: one slurmd per emulated node starts that node's tasks.
# Needs root and no init system: every daemon is started directly, its log under $STATE/log.
set -euo pipefail

STATE=${HPCINV_SLURM_DIR:-/var/lib/hpcinv-slurm}
NODES=${HPCINV_SLURM_NODES:-2}
CPUS=${HPCINV_SLURM_CPUS:-2}
MEM_MB=${HPCINV_SLURM_MEM_MB:-8000}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_SOCKET=/run/mysqld/mysqld.sock
DB_PASS=hpcinv-local-only  # the database listens on its Unix socket only (skip-networking)
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { echo "local-cluster: $*" >&2; }
alive() { pgrep -x -r R,S,D "$1" >/dev/null; }  # a running process of that name (zombies left unreaped do not count)
die() { log "error: $*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for ((i = 0; i < limit * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what did not come up within ${limit}s (logs: $STATE/log)"
}

install_packages() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || { log "error: missing packages ${missing[*]} and no apt-get to install them"; exit 3; }
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >"$STATE/log/apt.log" 2>&1 ||
    { apt-get update -q >>"$STATE/log/apt.log" 2>&1 && apt-get install -y -q "${missing[@]}" >>"$STATE/log/apt.log" 2>&1; } ||
    { log "error: apt-get install ${missing[*]} failed (see $STATE/log/apt.log)"; exit 3; }
}

proctrack() {
  # cgroup tracking kills every process of a job (Ray's daemons included) at its end; it needs the
  # cgroup-v1 freezer. Otherwise process groups: linuxproc would lose daemons whose parent exited.
  if [[ -d /sys/fs/cgroup/freezer ]]; then echo cgroup; else echo pgid; fi
}

write_configs() {
  local host last
  host=$(hostname -s)
  last=$((17000 + NODES))
  mkdir -p /etc/slurm
  cat >"$CONF" <<EOF
# Written by hpcinv slurm/local-cluster.sh: ${NODES} emulated nodes on $(hostname -s).
ClusterName=hpcinv
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldPort=6817
ProctrackType=proctrack/$(proctrack)
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
EnforcePartLimits=ALL
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=n[1-${NODES}] NodeHostname=${host} NodeAddr=127.0.0.1 Port=[17001-${last}] CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=n[1-${NODES}] Default=YES MaxTime=INFINITE State=UP
EOF
  cat >/etc/slurm/cgroup.conf <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=no
EOF
  cat >"$DBD_CONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
  chmod 600 "$DBD_CONF"
}

start_munge() {
  alive munged && return 0
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_database() {
  if ! alive mariadbd; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >"$STATE/log/mariadb-install.log" 2>&1
    (setsid mariadbd --user=mysql --skip-networking --socket=$DB_SOCKET >"$STATE/log/mariadb.log" 2>&1 &)
    wait_for 30 MariaDB mariadb --socket=$DB_SOCKET -e 'select 1'
  fi
  mariadb --socket=$DB_SOCKET <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurm() {
  alive slurmdbd || slurmdbd
  wait_for 30 slurmdbd sacctmgr -n show cluster
  sacctmgr -i -Q add cluster hpcinv >/dev/null 2>&1 || true
  alive slurmctld || slurmctld
  wait_for 30 slurmctld scontrol ping
  for ((n = 1; n <= NODES; n++)); do
    mkdir -p "$STATE/spool/n$n"
    pgrep -r R,S,D -f "slurmd -N n$n\$" >/dev/null || slurmd -N "n$n"
  done
  wait_for 30 "$NODES idle nodes" sh -c "test \$(sinfo -h -t idle -o %D) -eq $NODES"
  scontrol update nodename="n[1-$NODES]" state=resume >/dev/null 2>&1 || true
}

up() {
  [[ $(id -u) == 0 ]] || { log "error: run as root (it installs packages and starts system daemons)"; exit 3; }
  mkdir -p "$STATE"/{ctld,spool,run,log}
  install_packages
  write_configs
  start_munge
  start_database
  start_slurm
  log "up: $(sinfo -h -o '%P %D nodes %c CPUs/node %T' | head -1); config $CONF, logs $STATE/log"
}

down() {
  # Jobs still running are cancelled so no task (or Ray daemon it started) outlives the cluster.
  if scontrol ping >/dev/null 2>&1; then scancel --full --quiet --user=root 2>/dev/null || true; sleep 1; fi
  local daemons=(slurmd slurmctld slurmdbd)
  for daemon in "${daemons[@]}"; do pkill -x "$daemon" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    running=0
    for daemon in "${daemons[@]}"; do alive "$daemon" && running=1; done
    ((running)) || break
    sleep 0.2
  done
  for daemon in "${daemons[@]}" slurmstepd; do pkill -9 -x "$daemon" 2>/dev/null || true; done
  if alive mariadbd; then
    mariadb-admin --socket=$DB_SOCKET shutdown 2>/dev/null || pkill -x mariadbd || true
  fi
  pkill -x munged 2>/dev/null || true
  log "down"
}

purge() {
  down
  for ((i = 0; i < 50; i++)); do alive mariadbd || break; sleep 0.2; done
  rm -rf "$STATE/ctld" "$STATE/spool"
  [[ -d /var/lib/mysql/slurm_acct_db ]] && rm -rf /var/lib/mysql/slurm_acct_db
  log "purged controller state and accounting in $STATE"
}

status() {
  for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
    printf '%-10s %s\n' "$daemon" "$(pgrep -x -r R,S,D "$daemon" | wc -l) running"
  done
  scontrol ping 2>/dev/null | head -1 || true
  sinfo 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  purge) purge ;;
  status) status ;;
  *) echo "usage: $0 up|down|purge|status" >&2; exit 2 ;;
esac
