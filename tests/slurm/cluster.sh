#!/usr/bin/env bash
# A real single-node SLURM on this machine, for the SLURM tests and CI.
#
#   tests/slurm/cluster.sh install      Debian's slurm-wlm and munge, if missing (root)
#   tests/slurm/cluster.sh start DIR    slurm.conf for localhost in DIR; start munged (unless one
#                                       runs), slurmctld and slurmd; wait until the node is idle
#   tests/slurm/cluster.sh stop DIR     stop only the daemons that `start DIR` started
#
# The config is written to DIR/slurm.conf and installed at SLURM's default path,
# /etc/slurm/slurm.conf (a config found there is set aside in DIR and put back by `stop`): the
# executor plugin's job step drops SLURM_* variables, SLURM_CONF among them, before its srun, so
# inside a job only the default path is read. There is no accounting database:
# job status comes from squeue (the profile's test run passes --slurm-status-command squeue), and
# MinJobAge keeps finished jobs in squeue long enough for the executor plugin to see them end.
# Needs root (SlurmUser=root, munged as the munge user); no systemd needed, nothing else touched.
set -euo pipefail

cmd=${1:?usage: cluster.sh install | start DIR | stop DIR}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

start() {
    local dir=$1
    mkdir -p "$dir"/{state,spool,log}
    dir=$(cd "$dir" && pwd)
    : >"$dir/started"
    local host cpus mem
    host=$(hostname -s)
    cpus=${SLURM_TEST_CPUS:-2}
    mem=$(($(free -m | awk '/^Mem:/ {print $2}') * 9 / 10))  # a bit under the machine's memory
    cat >"$dir/slurm.conf" <<EOF
ClusterName=latentstates-test
SlurmctldHost=$host
SlurmctldPort=${SLURM_TEST_PORT:-6817}
SlurmdPort=$((${SLURM_TEST_PORT:-6817} + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mkdir -p /etc/slurm
    if [ -e /etc/slurm/slurm.conf ] && ! grep -q "^# cluster.sh " /etc/slurm/slurm.conf; then
        mv /etc/slurm/slurm.conf "$dir/slurm.conf.system"
    fi
    { echo "# cluster.sh $dir"; cat "$dir/slurm.conf"; } >/etc/slurm/slurm.conf
    echo config >>"$dir/started"
    export SLURM_CONF=/etc/slurm/slurm.conf
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then  # no working munged yet
        mkdir -p /run/munge && chown munge: /run/munge
        runuser -u munge -- /usr/sbin/munged
        echo munged >>"$dir/started"
    fi
    slurmctld -f "$dir/slurm.conf"
    echo slurmctld >>"$dir/started"
    slurmd -f "$dir/slurm.conf"
    echo slurmd >>"$dir/started"
    for _ in $(seq 300); do  # generous: a loaded machine starts the daemons slowly
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            return 0
        fi
        sleep 1
    done
    echo "SLURM node did not become idle in 300 s; slurmctld log:" >&2
    tail -n 20 "$dir/log/slurmctld.log" >&2 || true
    return 1
}

stop() {
    local dir=$1
    [ -f "$dir/started" ] || return 0
    local pids=()
    for daemon in slurmd slurmctld; do
        if grep -qx "$daemon" "$dir/started" && [ -f "$dir/$daemon.pid" ]; then
            pids+=("$(cat "$dir/$daemon.pid")")
            kill "${pids[-1]}" 2>/dev/null || true
        fi
    done
    for _ in $(seq 120); do  # until they have exited (their ports free for the next start)
        local alive=0
        for pid in "${pids[@]}"; do
            if [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
                alive=1
            fi
        done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    if grep -qx munged "$dir/started"; then
        pkill -u munge -x munged || true
    fi
    if grep -qx config "$dir/started" && grep -q "^# cluster.sh $dir\$" /etc/slurm/slurm.conf 2>/dev/null; then
        rm -f /etc/slurm/slurm.conf
        if [ -e "$dir/slurm.conf.system" ]; then
            mv "$dir/slurm.conf.system" /etc/slurm/slurm.conf
        fi
    fi
    rm -f "$dir/started"
}

case $cmd in
install) install ;;
start) start "${2:?usage: cluster.sh start DIR}" ;;
stop) stop "${2:?usage: cluster.sh stop DIR}" ;;
*)
    echo "usage: cluster.sh install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
