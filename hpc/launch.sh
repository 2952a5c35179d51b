#!/bin/bash
# Launch a training script with Horovod across the nodes and tasks of the current SLURM allocation.
# Called by hpc/levir.slurm, hpc/whu.slurm and hpc/cifar10.slurm.
#   CONFIG           experiment YAML (required)
#   TRAIN_SCRIPT     default train.py
#   TRAIN_ARGS       extra arguments of the script (default "--resume": a requeued job continues
#                    from the run's last checkpoint; a new run starts from scratch)
#   HOROVOD_ARGS     extra horovodrun arguments (e.g. "--gloo" on machines without MPI)
#   PYTHON, HOROVODRUN   default .venv/bin/python, .venv/bin/horovodrun
set -euo pipefail
: "${CONFIG:?set CONFIG to an experiment YAML, e.g. configs/levircd_ceecnetv1_d6nf32.yaml}"
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
[ -f "$CONFIG" ] || { echo "error: config $CONFIG does not exist"; exit 2; }
ntasks=${SLURM_NTASKS:?not inside a SLURM allocation (SLURM_NTASKS unset)}

# SLURM_JOB_NODELIST ("gpu[01-03]") and SLURM_TASKS_PER_NODE ("4(x2),2") -> "gpu01:4,gpu02:4,gpu03:2"
slots=()
IFS=, read -ra groups <<< "${SLURM_TASKS_PER_NODE:-$ntasks}"
for group in "${groups[@]}"; do
    if [[ $group =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
        for ((i = 0; i < BASH_REMATCH[2]; i++)); do slots+=("${BASH_REMATCH[1]}"); done
    else
        slots+=("$group")
    fi
done
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
hosts=()
for i in "${!nodes[@]}"; do hosts+=("${nodes[$i]}:${slots[$i]}"); done
HOSTS=$(IFS=,; echo "${hosts[*]}")

echo "job ${SLURM_JOB_ID:-?}: $ntasks Horovod ranks on $HOSTS; $CONFIG"
# shellcheck disable=SC2086  # HOROVOD_ARGS and TRAIN_ARGS are word lists
exec "${HOROVODRUN:-.venv/bin/horovodrun}" -np "$ntasks" -H "$HOSTS" ${HOROVOD_ARGS:-} \
    "${PYTHON:-.venv/bin/python}" "${TRAIN_SCRIPT:-train.py}" -c "$CONFIG" ${TRAIN_ARGS---resume}
