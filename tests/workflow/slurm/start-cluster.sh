#!/usr/bin/env bash
# Stand up a single-node SLURM cluster on this machine for the integration test:
# munge + slurmctld + slurmd on localhost, 2 fake GPUs (GRES on /dev/null, /dev/zero),
# no accounting (the profile checks job status with squeue). Needs root and Debian's
# slurm-wlm + munge packages (`.ci/run` installs them). Idempotent.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "start-cluster.sh: needs root" >&2; exit 1; fi
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons; a plain PATH (env -i) lacks these
for bin in slurmctld slurmd munged sinfo; do
    command -v "$bin" >/dev/null || { echo "start-cluster.sh: $bin missing (apt install slurm-wlm munge)" >&2; exit 1; }
done
if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then echo "cluster already up"; exit 0; fi

mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge /etc/slurm \
         /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge 2>/dev/null || true
chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 2>/dev/null || munged --force

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
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
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
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "start-cluster.sh: the node did not come up; see /var/log/slurm/*.log" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
