#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine (as root), with munge and accounting (slurmdbd + MariaDB), so
# submitit's Slurm path can be exercised without a cluster: scripts/slurm-local.sh start | stop | status | env
#
# Everything lives under $SCM_SLURM_DIR (default /tmp/scm-slurm); clients find it through SLURM_CONF, which
# `start` and `env` print as an export line:   eval "$(scripts/slurm-local.sh env)"
# Installs the Debian packages on first use (apt). Slurm 22.05 on Debian 12 was the version checked.
set -euo pipefail

DIR=${SCM_SLURM_DIR:-/tmp/scm-slurm}
HOST=$(hostname)
CLUSTER=scmbench
DB_PORT=${SCM_SLURM_DB_PORT:-3307}
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
export SLURM_CONF=$DIR/etc/slurm.conf

die() { echo "slurm-local: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    for bin in slurmctld slurmd slurmdbd sbatch munged mariadbd; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "needs root to install the Slurm packages (missing: ${missing[*]})"
    echo "slurm-local: installing slurmctld slurmd slurmdbd slurm-client munge mariadb-server (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurmdbd slurm-client munge mariadb-server >/dev/null
    apt-get clean  # the downloaded .debs are not needed again; the venv that comes next needs the disk
}

write_configs() {
    mkdir -p "$DIR"/{etc,state,spool,log,run,mysql}
    cat > "$DIR/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
# a requeued job may restart only after the credential lifetime (default 120 s): short here, so preemption tests
# finish quickly; the main scheduler also looks every 5 s instead of 60
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5
CryptoType=crypto/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
ReturnToService=2
KillWait=5
MinJobAge=300
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"  # slurmdbd refuses a world-readable config
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    die "$what did not come up in ${seconds} s; see $DIR/log/"
}

running() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

start() {
    install_packages
    [ "$(id -u)" -eq 0 ] || die "start needs root (munged, slurmd)"
    if running slurmctld; then echo "slurm-local: already running"; echo "export SLURM_CONF=$SLURM_CONF"; return; fi
    write_configs
    # munge: the packages ship /etc/munge/munge.key; the daemon runs as the munge user
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! pgrep -x munged >/dev/null; then runuser -u munge -- /usr/sbin/munged; fi
    # MariaDB with its own data dir and port, so a system database (if any) is left alone
    if ! running mariadbd; then
        [ -d "$DIR/mysql/mysql" ] || mariadb-install-db --datadir="$DIR/mysql" --user=root >"$DIR/log/mariadb-install.log" 2>&1
        mariadbd --datadir="$DIR/mysql" --user=root --bind-address=127.0.0.1 --port="$DB_PORT" \
            --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mariadbd.pid" >"$DIR/log/mariadbd.log" 2>&1 &
        wait_for 30 "MariaDB" mariadb --socket="$DIR/run/mysqld.sock" -uroot -e "select 1"
        mariadb --socket="$DIR/run/mysqld.sock" -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    fi
    slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 30 "slurmdbd" sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true  # already there on a restart
    slurmctld -f "$SLURM_CONF"
    wait_for 30 "slurmctld" scontrol ping
    slurmd -f "$SLURM_CONF"
    wait_for 30 "the node" bash -c "sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'"
    echo "slurm-local: up (node $HOST, $CPUS CPUs, partition debug); clients need:"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
    for daemon in slurmd slurmctld slurmdbd mariadbd; do
        if running "$daemon"; then kill "$(cat "$DIR/run/$daemon.pid")" 2>/dev/null || true; fi
    done
    sleep 1
    echo "slurm-local: stopped (state kept in $DIR; munged left running)"
}

status() {
    for daemon in mariadbd slurmdbd slurmctld slurmd; do
        if running "$daemon"; then echo "$daemon: running"; else echo "$daemon: stopped"; fi
    done
    if running slurmctld; then sinfo; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 start | stop | status | env" >&2; exit 2 ;;
esac
