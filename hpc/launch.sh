#!/bin/bash
# Run a mantis training script with Horovod over the nodes and tasks of the current SLURM job.
# Called (exec'd) by hpc/levir.slurm, hpc/whu.slurm and hpc/cifar10.slurm; hpc/README.md has the
# user's view. Everything is set by environment variables (sbatch passes the submitting shell's
# environment to the job), so nothing needs editing:
#   CONFIG          experiment YAML (required; relative to the repository root)
#   TRAIN_SCRIPT    train.py (default) or train_cifar.py
#   TRAIN_ARGS      extra arguments of the script (default "--resume": a new job starts from scratch,
#                   a requeued one continues from its last complete epoch)
#   RUN_DIR         where the run writes checkpoints and history (default <config's run dir>/slurm-<job id>,
#                   stable across requeues because SLURM keeps the job id; set it to an earlier job's
#                   run dir to continue that run in a new job)
#   HOROVOD_ARGS    extra horovodrun arguments, e.g. "--gloo" on machines without MPI
#   PYTHON, HOROVODRUN  default <repo>/.venv/bin/python and <repo>/.venv/bin/horovodrun
#   TRAIN_TIMEOUT   seconds (or 30m, 12h, ...) after which a hung training is stopped (default: the
#                   job's time left minus STOP_MARGIN, 20 s, so that the log says why before SLURM
#                   kills the job; 0 = no timeout). Requeueing jobs get their USR1 earlier.
#   KILL_AFTER      seconds from the timeout's SIGTERM to its SIGKILL (default 60)
#   MANTIS_SETUP    a file sourced first (site setup: module loads for CUDA + NCCL, conda, ...)
#   MANTIS_DRY_RUN=1  check everything but the other nodes and print the horovodrun command instead
#                   of running it
#
# The Horovod world comes from SLURM: -np $SLURM_NTASKS and -H node:slots, with the nodes of
# SLURM_JOB_NODELIST ("gpu[01-03]", expanded by scontrol) and the slots of SLURM_TASKS_PER_NODE
# ("4(x2),2" = 4 tasks on each of the first two nodes, 2 on the third). horovodrun starts the ranks
# of other nodes over ssh: the nodes need password-less ssh between them and the repository and its
# Python at the same paths (both checked below); a site's ssh port and key go into HOROVOD_ARGS
# (--ssh-port, --ssh-identity-file), its network for Gloo too (--network-interface ib0).
# The training scripts stop if Horovod's size differs from SLURM_NTASKS.
#
# Requeue: sbatch --requeue --signal=B:USR1@300 makes SLURM send USR1 to this shell 300 s before the
# time limit. The trap requeues the job (scontrol requeue $SLURM_JOB_ID) and stops the training with
# SIGTERM; the job gets back in the queue under the same id, so it finds the same RUN_DIR, and
# the script's --resume continues from the last complete epoch checkpoint. A plain SIGTERM (scancel, the
# time limit) is forwarded to the training as well.
#
# Bad input stops here with one line "error: ..." (exit 2) before any rank starts: no config, a data
# path of the config missing, more tasks on a node than GPUs on it, not inside a SLURM job, another
# node that ssh cannot reach or that lacks the repository's paths.
# shellcheck disable=SC2317  # the trap handlers below are only called indirectly
set -euo pipefail

say() { echo "[launch] $*"; }
fail() { echo "error: $*" >&2; exit 2; }

# --- signals first: USR1's default action would kill this shell -------------------------------
child="" requeued=0 stopping=0 stop_code=0 trapped=0
stop_child() { if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; fi; }
progress_file="" started=""   # set below: the run's newest-checkpoint file, the training's start time
made_progress() {  # a checkpoint written since this start of the job?
    [ -n "$started" ] && [ -n "$progress_file" ] && [ -f "$progress_file" ] \
        && [ "$(stat -c %Y "$progress_file")" -ge "$started" ]
}
on_usr1() {
    trapped=1
    [ "$requeued" = 1 ] || [ "$stopping" = 1 ] && return
    if made_progress; then
        requeued=1
        echo; say "USR1 (time limit near): requeueing job ${SLURM_JOB_ID:-?}; the training resumes from its last checkpoint"
        scontrol requeue "${SLURM_JOB_ID:-}" || echo "error: scontrol requeue ${SLURM_JOB_ID:-} failed" >&2
    else
        # USR1 before any new checkpoint: requeueing would repeat this forever (--time shorter than the
        # --signal lead time, or an epoch longer than the time limit)
        stopping=1 stop_code=3
        echo; echo "error: USR1 (time limit near) before this run wrote a checkpoint: not requeueing, it would loop; give the job a longer --time than the --signal lead time (300 s) and than one epoch" >&2
    fi
    stop_child
}
on_term() { trapped=1; stopping=1; [ "$stop_code" != 0 ] || stop_code=143; echo; say "SIGTERM: stopping the training"; stop_child; }
trap on_usr1 USR1
trap on_term TERM INT
wait_for() {  # the exit code of background process $1; a trapped signal interrupts wait: wait again
    local rc
    while :; do
        trapped=0
        set +e; wait "$1"; rc=$?; set -e
        [ "$trapped" = 1 ] || return "$rc"
    done
}

# --- inputs -------------------------------------------------------------------------------------
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ -n "${MANTIS_SETUP:-}" ]; then   # site setup: module loads, conda, ...
    [ -f "$MANTIS_SETUP" ] || fail "MANTIS_SETUP file $MANTIS_SETUP does not exist"
    set +eu
    # shellcheck disable=SC1090
    source "$MANTIS_SETUP"
    set -eu
fi
: "${CONFIG:?set CONFIG to an experiment YAML, e.g. CONFIG=configs/levircd_ceecnetv1_d6nf32.yaml}"
TRAIN_SCRIPT=${TRAIN_SCRIPT:-train.py}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
HOROVODRUN=${HOROVODRUN:-$ROOT/.venv/bin/horovodrun}
[ -f "$CONFIG" ] || fail "config $CONFIG does not exist$([[ $CONFIG == /* ]] || echo " (relative to $ROOT)")"
[ -f "$TRAIN_SCRIPT" ] || fail "training script $TRAIN_SCRIPT does not exist in $ROOT"
command -v "$PYTHON" >/dev/null || fail "python $PYTHON not found: run 'make install' or set PYTHON"
command -v "$HOROVODRUN" >/dev/null || fail "horovodrun $HOROVODRUN not found: run 'make install' or set HOROVODRUN"
[ -n "${SLURM_JOB_ID:-}" ] || fail "not inside a SLURM job: submit with sbatch (or run inside salloc)"
ntasks=${SLURM_NTASKS:-}
[ -n "$ntasks" ] || fail "SLURM_NTASKS is unset: give the job --ntasks or --ntasks-per-node"

# --- the Horovod world from SLURM's variables ----------------------------------------------------
slots=()
IFS=, read -ra groups <<< "${SLURM_TASKS_PER_NODE:-$ntasks}"
for group in "${groups[@]}"; do
    if [[ $group =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
        for ((i = 0; i < BASH_REMATCH[2]; i++)); do slots+=("${BASH_REMATCH[1]}"); done
    elif [[ $group =~ ^[0-9]+$ ]]; then
        slots+=("$group")
    else
        fail "cannot read SLURM_TASKS_PER_NODE='${SLURM_TASKS_PER_NODE:-}'"
    fi
done
total=0 most=0
for s in "${slots[@]}"; do total=$((total + s)); [ "$s" -gt "$most" ] && most=$s; done
[ "$total" = "$ntasks" ] || fail "SLURM_TASKS_PER_NODE='${SLURM_TASKS_PER_NODE:-}' adds up to $total tasks, SLURM_NTASKS is $ntasks"

# GPUs: one rank per GPU. SLURM_GPUS_ON_NODE is set when the job got GPUs (--gres=gpu:N,
# --gpus-per-node=N); some sites only set CUDA_VISIBLE_DEVICES. Neither set: a CPU run, no check.
gpus=""
if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
    gpus=$SLURM_GPUS_ON_NODE
elif [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "$CUDA_VISIBLE_DEVICES" != NoDevFiles ]; then
    IFS=, read -ra devices <<< "$CUDA_VISIBLE_DEVICES"
    gpus=${#devices[@]}
fi
if [ -n "$gpus" ] && [ "$gpus" -gt 0 ]; then
    [ "$most" -le "$gpus" ] || fail "$most tasks on a node but $gpus GPU(s) per node (SLURM_TASKS_PER_NODE=${SLURM_TASKS_PER_NODE:-$ntasks}): one Horovod rank per GPU, so ask for --ntasks-per-node=$gpus or more GPUs (--gres=gpu:$most)"
    [ "$most" -eq "$gpus" ] || say "warning: $gpus GPU(s) per node but only $most task(s) on a node: some GPUs stay idle"
fi

mapfile -t nodes < <(scontrol show hostnames "${SLURM_JOB_NODELIST:?SLURM_JOB_NODELIST is unset}")
[ "${#nodes[@]}" = "${#slots[@]}" ] || fail "SLURM_JOB_NODELIST has ${#nodes[@]} node(s) but SLURM_TASKS_PER_NODE describes ${#slots[@]}"
hosts=()
for i in "${!nodes[@]}"; do hosts+=("${nodes[$i]}:${slots[$i]}"); done
HOSTS=$(IFS=,; echo "${hosts[*]}")

# --- the config, its data, and the per-job run directory ----------------------------------------
case "$TRAIN_SCRIPT" in   # the config's schema (hpc/preflight.py)
    train_cifar.py) [[ " ${TRAIN_ARGS:-} " == *" --fake "* ]] && schema=(--cifar --no-data-check) || schema=(--cifar) ;;
    *)              schema=() ;;
esac
base=$("$PYTHON" hpc/preflight.py "${schema[@]}" "$CONFIG") || exit 2
RUN_DIR=${RUN_DIR:-$base/slurm-$SLURM_JOB_ID}
script_args=(-c "$CONFIG" --run-dir "$RUN_DIR")
progress_file=$RUN_DIR/checkpoints/latest.json
# shellcheck disable=SC2206  # a word list
extra=(${TRAIN_ARGS---resume})

# --- the other nodes: horovodrun starts their ranks over ssh -------------------------------------
# Checked before any rank starts, so that a node without password-less ssh, or without the repository
# and its Python at the same paths, stops the job with one line (horovodrun would print a traceback).
# ssh gets horovodrun's options plus the port and identity file of HOROVOD_ARGS (-p/--ssh-port,
# -i/--ssh-identity-file); nodes that horovodrun starts locally (an address of this machine) are skipped.
declare -A ssh_flags=([-p]=-p [--ssh-port]=-p [-i]=-i [--ssh-identity-file]=-i)
check_nodes() {
    local ssh=(ssh -n -o BatchMode=yes -o PasswordAuthentication=no -o StrictHostKeyChecking=no -o ConnectTimeout=10)
    local words word i remote_list remote python command dir pids=() codes=() reason
    read -ra words <<< "${HOROVOD_ARGS:-}"
    for ((i = 0; i < ${#words[@]}; i++)); do
        word=${words[$i]}
        if [[ $word == ?*=* ]] && [ -n "${ssh_flags[${word%%=*}]:-}" ]; then
            ssh+=("${ssh_flags[${word%%=*}]}" "${word#*=}")
        elif [ -n "${ssh_flags[$word]:-}" ]; then
            ssh+=("${ssh_flags[$word]}" "${words[i + 1]:-}")
            i=$((i + 1))
        fi
    done
    remote_list=$("$PYTHON" -c 'import sys; from horovod.runner.util.network import filter_local_addresses
print(*filter_local_addresses(sys.argv[1:]), sep="\n")' "${nodes[@]}") \
        || fail "$PYTHON cannot import horovod to tell the other nodes from this one: run 'make install' or set PYTHON"
    [ -n "$remote_list" ] || return 0
    mapfile -t remote <<< "$remote_list"
    python=$(command -v "$PYTHON"); [[ $python == /* ]] || python=$ROOT/$python
    command=$(printf 'cd %q && test -f %q && test -x %q' "$ROOT" "$TRAIN_SCRIPT" "$python")
    dir=$(mktemp -d)
    for i in "${!remote[@]}"; do
        "${ssh[@]}" "${remote[$i]}" "$command" > "$dir/$i" 2>&1 &
        pids+=($!)
    done
    for i in "${!remote[@]}"; do wait_for "${pids[$i]}" && codes+=(0) || codes+=($?); done
    for i in "${!remote[@]}"; do
        [ "${codes[$i]}" = 0 ] && continue
        reason=$(tr -d '\r' < "$dir/$i" | sed '/^ *$/d' | tail -n 1)
        rm -rf "$dir"
        [ "${codes[$i]}" = 255 ] || fail "node ${remote[$i]} has no $ROOT/$TRAIN_SCRIPT or no $python: every node needs the repository and its Python at the same paths (a shared file system)"
        fail "cannot ssh to node ${remote[$i]}: ${reason:-ssh exit code 255} (horovodrun starts the other nodes' ranks over ssh: the job's nodes need password-less ssh between them, see hpc/README.md)"
    done
    rm -rf "$dir"
    say "ssh to ${remote[*]}: ok"
}

# --- a timeout, so that a stalled rank cannot hang the job until SLURM kills it -----------------
to_seconds() {  # SLURM durations: [days-]hours:minutes:seconds, minutes:seconds; anything else -> ""
    local t=$1 d=0 h=0 m=0 s=0
    [[ $t =~ ^([0-9]+)-(.*)$ ]] && { d=${BASH_REMATCH[1]}; t=${BASH_REMATCH[2]}; }
    if [[ $t =~ ^([0-9]+):([0-9]+):([0-9]+)$ ]]; then h=${BASH_REMATCH[1]}; m=${BASH_REMATCH[2]}; s=${BASH_REMATCH[3]}
    elif [[ $t =~ ^([0-9]+):([0-9]+)$ ]]; then m=${BASH_REMATCH[1]}; s=${BASH_REMATCH[2]}
    elif [[ $t =~ ^([0-9]+)$ ]]; then m=${BASH_REMATCH[1]}
    else echo ""; return; fi
    echo $(( ((10#$d * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$s ))
}
if [ -z "${TRAIN_TIMEOUT:-}" ]; then
    left=$(to_seconds "$(squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null || true)")
    if [ -n "$left" ]; then
        TRAIN_TIMEOUT=$(( left - ${STOP_MARGIN:-20} )); [ "$TRAIN_TIMEOUT" -gt 0 ] || TRAIN_TIMEOUT=1
    else
        TRAIN_TIMEOUT=0   # no time limit (UNLIMITED) or unknown
    fi
fi

# shellcheck disable=SC2206  # HOROVOD_ARGS is a word list
cmd=("$HOROVODRUN" -np "$ntasks" -H "$HOSTS" ${HOROVOD_ARGS:-} "$PYTHON" "$TRAIN_SCRIPT" "${script_args[@]}" "${extra[@]}")
say "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname -s): $ntasks Horovod ranks on $HOSTS"
say "config $CONFIG, run dir $RUN_DIR, timeout ${TRAIN_TIMEOUT} s"
if [ "${MANTIS_DRY_RUN:-0}" = 1 ]; then
    say "dry run: ${cmd[*]}"
    exit 0
fi
check_nodes
mkdir -p "$RUN_DIR"
log=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *StdOut=//p' || true)
echo "$(date -Is) job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} ranks $ntasks hosts $HOSTS log ${log:-?}" \
    >> "$RUN_DIR/slurm_jobs.txt"
[ "$stopping" = 0 ] || { say "stopped before the training started"; exit "$stop_code"; }

# --- run: in the background, so that the traps run while we wait --------------------------------
started=$(date +%s)
KILL_AFTER=${KILL_AFTER:-60}   # seconds between the timeout's SIGTERM and its SIGKILL
timeout --kill-after=$KILL_AFTER "$TRAIN_TIMEOUT" "${cmd[@]}" &
child=$!
wait_for "$child" && rc=0 || rc=$?
child=""
# timeout exits 137 when the command outlived its SIGTERM by KILL_AFTER s and got SIGKILL (seen once: a
# horovodrun that received the SIGTERM 12 s after its start ran on): still the timeout's doing
if [ "$rc" = 137 ] && [ "$TRAIN_TIMEOUT" != 0 ] && [ $(( $(date +%s) - started )) -ge "$KILL_AFTER" ]; then
    say "the training outlived the timeout's SIGTERM by $KILL_AFTER s and was killed"
    rc=124
fi

if [ "$requeued" = 1 ]; then
    say "training stopped (exit code $rc); job $SLURM_JOB_ID is requeued and resumes from $RUN_DIR"
    exit 0
fi
if [ "$stopping" = 1 ]; then
    say "training stopped (exit code $rc)"
    exit "$stop_code"
fi
case $rc in
    0)   say "training finished" ;;
    124) echo "error: training stopped by the timeout of $TRAIN_TIMEOUT s (TRAIN_TIMEOUT; a stalled rank?): resubmit with RUN_DIR=$RUN_DIR to continue" >&2 ;;
    *)   echo "error: training failed with exit code $rc (its messages are above)" >&2 ;;
esac
exit "$rc"
