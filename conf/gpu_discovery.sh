#!/usr/bin/env bash
# Spark GPU discovery script: prints the executor's GPUs as {"name":"gpu","addresses":[...]}.
# Referenced by spark.executor.resource.gpu.discoveryScript in conf/cluster.yaml.
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo '{"name": "gpu", "addresses": []}'
  exit 0
fi
addrs=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed 's/^ *//; s/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addrs}]}"
