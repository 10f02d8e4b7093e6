#!/usr/bin/env bash
# Example (not run here: no SLURM on the development machine): one `accelerate launch` per node via srun.
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm_example.sh configs/accelerate/zero3.yaml \
#       train --config configs/rl_qwen25vl7b_tgrpo.yaml output_dir=/shared/runs/rl7b
# output_dir, train_data, media_root and the model must be on storage every node sees (docs/multinode.md).
#SBATCH --job-name=videor1
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
CONFIG=${1:?usage: slurm_example.sh ACCELERATE_CONFIG videor1-command [args...]}
shift
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${MAIN_PORT:-29500}
export VIDEOR1_DIST_TIMEOUT_S=${VIDEOR1_DIST_TIMEOUT_S:-1800}
# single quotes: SLURM_NODEID is expanded by each task on its own node, not here
srun --kill-on-bad-exit=1 bash -c 'accelerate launch --config_file "$0" \
    --num_machines "$SLURM_NNODES" --machine_rank "$SLURM_NODEID" \
    --num_processes $(( SLURM_NNODES * '"$GPUS_PER_NODE"' )) \
    --main_process_ip '"$MAIN_IP"' --main_process_port '"$PORT"' \
    --deepspeed_multinode_launcher standard --same_network --rdzv_backend static \
    -m videor1.cli "$@"' "$CONFIG" "$@"
