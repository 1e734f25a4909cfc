#!/usr/bin/env bash
# Stand up a single-node SLURM cluster on this machine for the integration test:
# munge + slurmctld + slurmd on localhost, 2 fake GPUs (GRES on /dev/null, /dev/zero).
#
#   start-cluster.sh               no accounting (no slurmdbd: `sacct` fails, job status
#                                  comes from squeue; MinJobAge keeps finished jobs 600 s)
#   start-cluster.sh --accounting  with accounting: MariaDB + slurmdbd (Debian's
#                                  mariadb-server + slurmdbd), the cluster registered with
#                                  sacctmgr, jobacct_gather/linux (sacct, efficiency report)
#
# Needs root and Debian's slurm-wlm + munge (and for --accounting slurmdbd +
# mariadb-server; `.ci/run` installs them). Idempotent: a cluster already up in the asked
# mode is left alone; one up in the other mode is restarted in the asked one (slurmctld and
# slurmd stopped with `scontrol shutdown`, by their pid files; MariaDB and slurmdbd keep
# running, unused, after a switch back to the plain cluster).
set -euo pipefail
mode=plain
case "${1:-}" in
    "") ;;
    --accounting) mode=accounting ;;
    --plain) mode=plain ;;
    *) echo "usage: start-cluster.sh [--accounting|--plain]" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then echo "start-cluster.sh: needs root" >&2; exit 1; fi
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons; a plain PATH (env -i) lacks these
need=(slurmctld slurmd munged sinfo scontrol)
[ "$mode" = accounting ] && need+=(slurmdbd sacctmgr mariadbd mariadb)
for bin in "${need[@]}"; do
    command -v "$bin" >/dev/null || {
        echo "start-cluster.sh: $bin missing (apt install slurm-wlm munge$([ "$mode" = accounting ] && echo ' slurmdbd mariadb-server'))" >&2
        exit 1
    }
done

up() { sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; }
running_mode() {  # the mode of the slurmctld answering now
    scontrol show config 2>/dev/null | awk '/^AccountingStorageType/ {print $3}' \
        | grep -q slurmdbd && echo accounting || echo plain
}
if up && [ "$(running_mode)" = "$mode" ]; then echo "cluster already up ($mode)"; exit 0; fi

mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge /etc/slurm \
         /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge 2>/dev/null || true
chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
# a munged that answers, else a new one: one left running without its socket (its package
# removed and installed again) is stopped first, or SLURM's authentication fails
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    pkill -x munged 2>/dev/null && sleep 1
    su -s /bin/sh munge -c munged 2>/dev/null || munged --force
fi

# ---------------------------------------------------------------- accounting: DB + slurmdbd
DB_PASS=rewardseg-test   # a throw-away test database on localhost only
if [ "$mode" = accounting ]; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/var/log/slurm/mariadb-install.log 2>&1
    fi
    if ! mariadb -e "select 1" >/dev/null 2>&1; then
        # detached from this script (its own session), pid in /run/mysqld/mysqld.pid;
        # --no-defaults: every setting it needs is here, and a distribution's leftover
        # config (the provider plugins' files of a removed package) cannot abort it
        setsid mariadbd --no-defaults --user=mysql --datadir=/var/lib/mysql \
            --bind-address=127.0.0.1 --socket=/run/mysqld/mysqld.sock \
            --pid-file=/run/mysqld/mysqld.pid >>/var/log/slurm/mariadb.log 2>&1 < /dev/null &
        db_pid=$!
        for _ in $(seq 60); do
            mariadb -e "select 1" >/dev/null 2>&1 && break
            kill -0 "$db_pid" 2>/dev/null || break  # it exited: no use waiting
            sleep 1
        done
        mariadb -e "select 1" >/dev/null || { echo "start-cluster.sh: MariaDB did not start; see /var/log/slurm/mariadb.log" >&2; exit 1; }
    fi
    mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
    cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
CONF
    chmod 600 /etc/slurm/slurmdbd.conf
    [ -s /run/slurmdbd.pid ] && kill -0 "$(cat /run/slurmdbd.pid)" 2>/dev/null || slurmdbd
    # memory is sampled every JobAcctGatherFrequency seconds: a smoke job (~4 s since the
    # start-up went to ~2.4 s) ends before a 5-second period's first sample (MaxRSS 0)
    ACCOUNTING="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1"
else
    ACCOUNTING="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

# ---------------------------------------------------------------- slurmctld + slurmd
stop() {  # a daemon started by this script, by its pid file, after a grace period
    local pidfile=$1 grace=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    for _ in $(seq "$grace"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    kill -0 "$pid" 2>/dev/null || return 0
    echo "start-cluster.sh: stopping $pidfile ($pid)" >&2
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 10); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
}
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then  # the other mode (or down)
    echo "restarting slurmctld + slurmd in mode $mode"
    grace=0
    scontrol shutdown >/dev/null 2>&1 && grace=30  # slurmctld stops both daemons itself
    stop /run/slurmctld.pid "$grace"
    stop /run/slurmd.pid "$grace"
fi

cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=rewardseg
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
${ACCOUNTING}
ReturnToService=2
MinJobAge=600
SlurmdTimeout=300
GresTypes=gpu
NodeName=localhost CPUs=${cpus} RealMemory=${mem} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
Name=gpu File=/dev/null
Name=gpu File=/dev/zero
CONF
if [ "$mode" = accounting ]; then  # sacctmgr reads slurm.conf: only now, the cluster
    for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
    sacctmgr -n list cluster >/dev/null || { echo "start-cluster.sh: slurmdbd did not answer; see /var/log/slurm/slurmdbd.log" >&2; exit 1; }
    sacctmgr -n list cluster format=cluster | grep -qw rewardseg || sacctmgr -i add cluster rewardseg >/dev/null
    sacctmgr -n list account format=account | grep -qw rewardseg \
        || sacctmgr -i add account rewardseg cluster=rewardseg description=tests organization=tests >/dev/null
    sacctmgr -n list assoc user=root account=rewardseg format=account | grep -qw rewardseg \
        || sacctmgr -i add user root account=rewardseg defaultaccount=rewardseg >/dev/null
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if up && [ "$(running_mode)" = "$mode" ]; then
        sinfo
        if [ "$mode" = accounting ]; then  # slurmctld registered with slurmdbd: sacct answers
            for _ in $(seq 30); do sacct -n -X -o JobID >/dev/null 2>&1 && break; sleep 1; done
            sacct -n -X -o JobID >/dev/null || { echo "start-cluster.sh: sacct does not answer" >&2; exit 1; }
        fi
        echo "cluster up ($mode)"
        exit 0
    fi
    sleep 1
done
echo "start-cluster.sh: the node did not come up; see /var/log/slurm/*.log" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
