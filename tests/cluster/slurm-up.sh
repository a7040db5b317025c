#!/usr/bin/env bash
# Start a single-node SLURM on 127.0.0.1 for the cluster test: munged, MariaDB, slurmdbd (so
# that sacct works), slurmctld and slurmd, with one GPU generic resource declared without
# hardware (gres gpu:fake:1, File=/dev/null). Debian's packages are installed if missing.
#
#   bash tests/cluster/slurm-up.sh [STATE_DIR]     # default: $SLURM_TEST_DIR or /tmp/slurm-test
#   source STATE_DIR/env                           # SLURM_CONF and the test partition/account
#   bash tests/cluster/slurm-down.sh [STATE_DIR]   # stops exactly the daemons started here
#
# Everything lives in STATE_DIR: configs (etc/), logs (log/), daemon state, the database and
# the PIDs of the daemons it started (pids/). Outside it only /etc/slurm/slurm.conf and
# gres.conf are made, as links to STATE_DIR/etc (refused if another configuration is there);
# its own munge socket and ports (base $SLURM_TEST_PORT_BASE, default 16800) keep clear of any
# system munged or SLURM. Idempotent: a cluster that is already up is left as it is.
# Exit status: 0 up; 2 SLURM cannot run here (not root, no apt-get, apt failed, another SLURM
# configuration in /etc/slurm); 1 it failed to start (the log tails say why). Either way
# STATE_DIR/failed holds the reason, which tests/test_cluster.py gives when it skips.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=$(realpath -m "${1:-${SLURM_TEST_DIR:-/tmp/slurm-test}}")
BASE=${SLURM_TEST_PORT_BASE:-16800}
CTLD_PORT=$((BASE + 17)) SLURMD_PORT=$((BASE + 18)) DBD_PORT=$((BASE + 19)) DB_PORT=$((BASE + 6))
PARTITION=debug GPU_PARTITION=gpu ACCOUNT=pipeline CLUSTER=pipelinetest
HOST=$(hostname -s)
t0=$SECONDS

say() { printf 'slurm-up: %s\n' "$*" >&2; }
fail() {  # fail STATUS MESSAGE: record why (the test's skip reason), show the logs, exit
    local status=$1; shift
    say "FAILED: $*"
    mkdir -p "$STATE" && printf '%s\n' "$*" >"$STATE/failed"
    for f in "$STATE"/log/*.log; do
        [ -s "$f" ] && { say "--- tail of $f"; tail -n 15 "$f" >&2; }
    done
    exit "$status"
}

# shellcheck source=tests/cluster/common.sh
source "$here/common.sh"

# --- 1. install (only what is missing) -------------------------------------------------------
need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
command -v slurmdbd >/dev/null || need+=(slurmdbd)
command -v munged >/dev/null || need+=(munge)
command -v mariadbd >/dev/null || need+=(mariadb-server)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || fail 2 "SLURM is not installed and this is not root: cannot apt-get install ${need[*]}"
    command -v apt-get >/dev/null || fail 2 "SLURM is not installed and there is no apt-get (Debian/Ubuntu only)"
    say "installing ${need[*]}"
    # No daemon may start from a package's postinst: this script starts its own.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)
    apt_install() { apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$apt_log" 2>&1; }
    installed=1
    if ! { apt-cache show slurmctld >/dev/null 2>&1 && apt_install; }; then  # stale or no lists
        apt-get update -qq >>"$apt_log" 2>&1 && apt_install || installed=
    fi
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ -z "$installed" ]; then
        tail -n 20 "$apt_log" >&2
        fail 2 "apt-get install ${need[*]} failed: $(grep -E '^E:' "$apt_log" | tail -n 1)"
    fi
    rm -f "$apt_log"
    say "installed in $((SECONDS - t0)) s"
fi
[ "$(id -u)" -eq 0 ] || fail 2 "slurmd must run as root; run this script as root"

# --- 2. already up? ----------------------------------------------------------------------------
export SLURM_CONF=$STATE/etc/slurm.conf
linked() { [ "$(readlink /etc/slurm/slurm.conf)" = "$STATE/etc/slurm.conf" ]; }
if all_alive && linked && sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
    rm -f "$STATE/failed"
    say "already up ($STATE); source $STATE/env"
    exit 0
fi
# Some but not all of ours alive (or none): start clean, keeping the database and state.
bash "$here/slurm-down.sh" "$STATE" >/dev/null 2>&1 || true
rm -f "$STATE/failed"
mkdir -p "$STATE"/{etc,log,pids,run,state,spool,munge}
chmod 755 "$STATE"
rm -f "$STATE"/log/*.log

# --- 3. configuration ----------------------------------------------------------------------------
read -r cpus boards sockets cores threads mem < <(slurmd -C | awk '
    /^NodeName/ {for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
                 print v["CPUs"], v["Boards"], v["SocketsPerBoard"], v["CoresPerSocket"],
                       v["ThreadsPerCore"], v["RealMemory"]}')
[ -n "${mem:-}" ] || fail 1 "slurmd -C did not describe this machine"
# The node is declared with at least 2 CPUs and 16 GB whatever the machine has
# (config_overrides: nothing is enforced without cgroups), so that the slurm profile's
# requests (2 CPUs and 8 GB for training) fit on any test machine.
if [ "$cpus" -lt 2 ]; then cpus=2 boards=1 sockets=1 cores=2 threads=1; fi
mem=$((mem * 9 / 10 > 16000 ? mem * 9 / 10 : 16000))

munge_socket=$STATE/munge/munge.socket
cat >"$STATE/etc/slurm.conf" <<EOF
# Written by tests/cluster/slurm-up.sh: a single-node test cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$munge_socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups needed (nor always available in containers).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=300
# Start queued jobs at once, not every few seconds.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# Accounting through slurmdbd: sacct, job comments (the plugin's rule names) and GPU TRES.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$munge_socket
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu,gres/gpu:fake
AccountingStoreFlags=job_comment
# One GPU without hardware: gres.conf says File=/dev/null and AutoDetect=off.
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem Gres=gpu:fake:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=$GPU_PARTITION Nodes=$HOST MaxTime=INFINITE State=UP
EOF
cat >"$STATE/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu Type=fake File=/dev/null
EOF
cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$munge_socket
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$STATE/etc/slurmdbd.conf"
# Client commands find the cluster through SLURM_CONF, but the executor plugin's in-job srun
# runs with every SLURM_* variable removed: it reads the default /etc/slurm/slurm.conf, so
# that path links here (only if no other SLURM configuration is there; slurm-down removes it).
for f in slurm.conf gres.conf; do
    link=/etc/slurm/$f
    [ -L "$link" ] && [ "$(readlink "$link")" = "$STATE/etc/$f" ] && continue
    if [ -e "$link" ] || [ -L "$link" ]; then
        fail 2 "$link exists (another SLURM's configuration?); the test cluster will not replace it"
    fi
    mkdir -p /etc/slurm && ln -s "$STATE/etc/$f" "$link"
done
cat >"$STATE/env" <<EOF
# source this file to use the test cluster (written by tests/cluster/slurm-up.sh)
export SLURM_CONF=$STATE/etc/slurm.conf
export SLURM_TEST_PARTITION=$PARTITION
export SLURM_TEST_GPU_PARTITION=$GPU_PARTITION
export SLURM_TEST_ACCOUNT=$ACCOUNT
EOF

# --- 4. daemons -----------------------------------------------------------------------------------
# munge: its own key and socket, so that a system munged (if any) is left alone.
if [ ! -s "$STATE/munge/munge.key" ]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
fi
chown -R munge:munge "$STATE/munge" && chmod 755 "$STATE/munge" && chmod 400 "$STATE/munge/munge.key"
start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground --socket="$munge_socket" \
    --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munge/munged.pid" \
    --seed-file="$STATE/munge/munged.seed" --log-file="$STATE/log/munged.log"
wait_for "munged" 10 munge -n -S "$munge_socket" -o /dev/null

# MariaDB: a private data folder and socket, TCP on 127.0.0.1 only.
db_socket=$STATE/run/mysqld.sock
if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root \
        --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
        || fail 1 "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
fi
start mariadb mariadbd --no-defaults --datadir="$STATE/mysql" --socket="$db_socket" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --user=root \
    --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --skip-log-bin
wait_for "MariaDB" 30 mariadb-admin --no-defaults -S "$db_socket" -u root ping
mariadb --no-defaults -S "$db_socket" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
    || fail 1 "could not create the database user for slurmdbd"

start slurmdbd slurmdbd -D
wait_for "slurmdbd" 30 sacctmgr -n list cluster
# The cluster, the test account and root's association (enforced: a wrong account is refused).
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=test organization=test >/dev/null
sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=user | grep -qx root \
    || sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null

start slurmctld slurmctld -D -f "$SLURM_CONF"
wait_for "slurmctld" 30 scontrol ping
start slurmd slurmd -D -f "$SLURM_CONF"
node_up() {
    local state
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1)
    case $state in
        idle | mixed | allocated) return 0 ;;
        drain* | down* | inval*) scontrol update nodename="$HOST" state=resume 2>/dev/null; return 1 ;;
        *) return 1 ;;
    esac
}
wait_for "node $HOST" 30 node_up

say "up in $((SECONDS - t0)) s: cluster $CLUSTER, partitions $PARTITION (default) and $GPU_PARTITION, account $ACCOUNT, gres gpu:fake:1"
say "state in $STATE; use it with: source $STATE/env"
