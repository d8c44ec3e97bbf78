#!/usr/bin/env bash
# Two machines, each with its GPUs: run this on both, with NODE_RANK=0 on the first and 1 on the second.
# MASTER_ADDR is the first machine's address, reachable from the second; the port must be free there.
#   NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash examples/dist/multi_node.sh
#   NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash examples/dist/multi_node.sh
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK (0 on the master)}" "${MASTER_ADDR:?set MASTER_ADDR (the master's address)}"
exec tunesmith train examples/dist/zero3_lora.yaml \
  dist.nnodes=2 dist.node_rank="$NODE_RANK" dist.master_addr="$MASTER_ADDR" dist.master_port=29500 "$@"
