#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for trying hpcinv without a cluster and for CI.
#
#   sudo slurm/local-cluster.sh up        install (Debian/Ubuntu packages) and start it
#   eval "$(slurm/local-cluster.sh env)"  point sbatch, sinfo, srun ... of this shell at it
#   sudo slurm/local-cluster.sh status    what is running
#   sudo slurm/local-cluster.sh down      stop the daemons it started (state and accounting kept)
#   sudo slurm/local-cluster.sh purge     stop them and delete state + accounting (job ids restart at 1)
#
# Shared hosts: its configuration lives in $STATE/etc (SLURM_CONF points there; /etc/slurm is never
# written), every daemon it starts records its pid in $STATE/run and carries HPCINV_LOCAL_CLUSTER=$STATE
# in its environment, and `down` stops only those processes (checked by that mark, so a reused pid or
# another cluster's daemon is never signalled). A munged or MariaDB already running is used, not owned.
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
ETC=$STATE/etc
CONF=$ETC/slurm.conf
DBD_CONF=$ETC/slurmdbd.conf  # SLURM reads slurmdbd.conf and cgroup.conf next to $SLURM_CONF
RUN=$STATE/run
DB_SOCKET=/run/mysqld/mysqld.sock
DB_PASS=hpcinv-local-only  # the database listens on its Unix socket only (skip-networking)
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

export SLURM_CONF=$CONF  # SLURM's commands run here use this cluster's configuration
MARK="HPCINV_LOCAL_CLUSTER=$STATE"  # in the environment of every daemon started here: what makes it ours
spawn() { env "$MARK" "$@"; }

log() { echo "local-cluster: $*" >&2; }
alive() { pgrep -x -r R,S,D "$1" >/dev/null; }  # a running process of that name (zombies left unreaped do not count)
die() { log "error: $*"; exit 1; }

ours() {  # ours PID: a live process started by this script for this state folder
  [[ -n $1 && -r /proc/$1/environ ]] && grep -qxF "$MARK" < <({ tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null)
}
running() {  # running NAME: the daemon whose pid file $RUN/NAME.pid names is up and ours
  [[ -s $RUN/$1.pid ]] && ours "$(head -1 "$RUN/$1.pid")"
}
record() {  # record NAME: write $RUN/NAME.pid for the newest process of that name that is ours
  local pid
  for pid in $(pgrep -x -r R,S,D "$1" | sort -rn); do
    if ours "$pid"; then echo "$pid" >"$RUN/$1.pid"; return 0; fi
  done
  return 1
}
stop() {  # stop PID...: SIGTERM the ones that are ours, wait up to 10 s, then SIGKILL what is left
  local pids=() pid
  for pid in "$@"; do ours "$pid" && pids+=("$pid"); done
  ((${#pids[@]})) || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    local left=0
    for pid in "${pids[@]}"; do ours "$pid" && left=1; done
    ((left)) || return 0
    sleep 0.2
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}
marked() {  # pids of every process carrying our mark (job steps left behind by a killed slurmd)
  local dir
  for dir in /proc/[0-9]*; do ours "${dir#/proc/}" && echo "${dir#/proc/}"; done
  return 0
}

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
  mkdir -p "$ETC"
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
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
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
  cat >"$ETC/cgroup.conf" <<EOF
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
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
  chmod 600 "$DBD_CONF"
}

start_munge() {
  alive munged && return 0  # the host's munged: used, not ours to stop
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  spawn runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged sh -c 'munge -n | unmunge'
  record munged || log "warning: the munged started here did not keep its mark; down will leave it running"
}

start_database() {
  if ! alive mariadbd; then  # the host's MariaDB, where one runs, is used, not ours to stop
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >"$STATE/log/mariadb-install.log" 2>&1
    (spawn setsid mariadbd --user=mysql --skip-networking --socket=$DB_SOCKET >"$STATE/log/mariadb.log" 2>&1 &)
    wait_for 30 MariaDB mariadb --socket=$DB_SOCKET -e 'select 1'
    record mariadbd || log "warning: the MariaDB started here did not keep its mark; down will leave it running"
  fi
  mariadb --socket=$DB_SOCKET <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurm() {
  running slurmdbd || spawn slurmdbd
  wait_for 30 slurmdbd sacctmgr -n show cluster
  sacctmgr -i -Q add cluster hpcinv >/dev/null 2>&1 || true
  running slurmctld || spawn slurmctld
  wait_for 30 slurmctld scontrol ping
  for ((n = 1; n <= NODES; n++)); do
    mkdir -p "$STATE/spool/n$n"
    running "slurmd-n$n" || spawn slurmd -N "n$n"
  done
  wait_for 30 "$NODES idle nodes" sh -c "test \$(sinfo -h -t idle -o %D) -eq $NODES"
  scontrol update nodename="n[1-$NODES]" state=resume >/dev/null 2>&1 || true
}

up() {
  [[ $(id -u) == 0 ]] || { log "error: run as root (it installs packages and starts system daemons)"; exit 3; }
  mkdir -p "$STATE"/{ctld,spool,run,log,etc}
  install_packages
  write_configs
  start_munge
  start_database
  start_slurm
  log "up: $(sinfo -h -o '%P %D nodes %c CPUs/node %T' | head -1); config $CONF, logs $STATE/log"
  log "for sbatch, sinfo, srun in your shell: eval \"\$($0 env)\""
}

down() {
  # Jobs still running on this cluster are cancelled so no task (or Ray daemon it started) outlives it.
  if running slurmctld && scontrol ping >/dev/null 2>&1; then
    scancel --full --quiet --user=root 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.2; done
  fi
  local name file
  for name in slurmd slurmctld slurmdbd mariadbd munged; do  # nodes first, the database and munge last
    for file in "$RUN/$name".pid "$RUN/$name"-*.pid; do
      [[ -s $file ]] || continue
      stop "$(head -1 "$file")"
      rm -f "$file"
    done
  done
  stop $(marked)  # job steps (slurmstepd) and tasks a killed slurmd left behind: ours only
  log "down"
}

purge() {
  # Accounting lives in a MariaDB database: dropped through the server (which may be the host's own).
  if mariadb --socket=$DB_SOCKET -e 'select 1' >/dev/null 2>&1; then
    mariadb --socket=$DB_SOCKET -e 'DROP DATABASE IF EXISTS slurm_acct_db' || true
  fi
  down
  rm -rf "$STATE/ctld" "$STATE/spool"
  log "purged controller state and accounting in $STATE"
}

status() {
  local daemon file
  for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
    local mine=0
    for file in "$RUN/$daemon".pid "$RUN/$daemon"-*.pid; do [[ -s $file ]] && ours "$(head -1 "$file")" && mine=$((mine + 1)); done
    printf '%-10s %s running, %s started by this script\n' "$daemon" "$(pgrep -x -r R,S,D "$daemon" | wc -l)" "$mine"
  done
  scontrol ping 2>/dev/null | head -1 || true
  sinfo 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  down) down ;;
  purge) purge ;;
  status) status ;;
  *) echo "usage: $0 up|env|down|purge|status" >&2; exit 2 ;;
esac
