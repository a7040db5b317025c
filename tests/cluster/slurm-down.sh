#!/usr/bin/env bash
# Stop the test SLURM that tests/cluster/slurm-up.sh started: cancel its jobs, then TERM (and,
# after 10 s, KILL) exactly the daemons recorded in STATE_DIR/pids, newest first. Processes
# it did not start are never touched. Idempotent: nothing recorded or alive is not an error.
#
#   bash tests/cluster/slurm-down.sh [STATE_DIR]   # default: $SLURM_TEST_DIR or /tmp/slurm-test
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=$(realpath -m "${1:-${SLURM_TEST_DIR:-/tmp/slurm-test}}")
t0=$SECONDS
say() { printf 'slurm-down: %s\n' "$*" >&2; }
fail() { say "$2"; exit "$1"; }
# shellcheck source=tests/cluster/common.sh
source "$here/common.sh"

[ -d "$STATE/pids" ] || { say "nothing to stop ($STATE/pids does not exist)"; exit 0; }

# Jobs still running on this cluster would outlive slurmd (their slurmstepd is separate).
if recorded_pid slurmctld >/dev/null && command -v scancel >/dev/null; then
    SLURM_CONF=$STATE/etc/slurm.conf timeout 10 scancel --full --quiet --user="$(id -un)" || true
fi

# stop NAME...: TERM those that are ours, wait up to 10 s for all of them, KILL what is left.
stop() {
    local name pid pids=() names=()
    for name in "$@"; do
        if pid=$(recorded_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && names+=("$name")
        fi
        rm -f "$STATE/pids/$name"
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && { say "stopped ${names[*]}"; return 0; }
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null && say "killed $pid (no exit 10 s after TERM)"; done
    return 0
}

stop slurmd slurmctld
stop slurmdbd
stop mariadb munged
for f in slurm.conf gres.conf; do  # the links slurm-up.sh made, if they point here
    link=/etc/slurm/$f
    [ -L "$link" ] && [ "$(readlink "$link")" = "$STATE/etc/$f" ] && rm -f "$link"
done
say "down in $((SECONDS - t0)) s"
