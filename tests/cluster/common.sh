# Shared by slurm-up.sh and slurm-down.sh (sourced; needs STATE, say and fail).
# A daemon's record is STATE/pids/NAME: "PID STARTTIME", the start time (clock ticks since
# boot, /proc/PID/stat field 22) guarding against a recycled PID.

DAEMONS=(munged mariadb slurmdbd slurmctld slurmd)  # in start order

starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

# recorded_pid NAME: print the PID if the recorded process is still the one we started.
recorded_pid() {
    local record=$STATE/pids/$1 pid start
    [ -s "$record" ] || return 1
    read -r pid start <"$record"
    [ -n "$pid" ] && [ "$(starttime "$pid")" = "$start" ] && echo "$pid"
}

all_alive() {
    local name
    for name in "${DAEMONS[@]}"; do recorded_pid "$name" >/dev/null || return 1; done
}

# start NAME COMMAND...: run a foreground daemon in its own session, record its PID.
start() {
    local name=$1; shift
    setsid "$@" >"$STATE/log/$name.console.log" 2>&1 </dev/null &
    local pid=$!
    local start=
    for _ in $(seq 50); do start=$(starttime "$pid") && [ -n "$start" ] && break; sleep 0.02; done
    echo "$pid $start" >"$STATE/pids/$name"
    last_started=$name
}

# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds; fail early if the daemon just
# started has died.
wait_for() {
    local what=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ -n "${last_started:-}" ] && ! recorded_pid "$last_started" >/dev/null; then
            fail 1 "$last_started exited while waiting for $what (see $STATE/log/$last_started*.log)"
        fi
        [ $SECONDS -lt $deadline ] || fail 1 "$what not ready after $seconds s"
        sleep 0.2
    done
}
