#!/usr/bin/env bash
# The GPU checks of issue 12 in one call: step ratios per meta scope and cost lever with and
# without bf16 (sequence length 64 and 128), short in-process trainings in bf16 and fp16 on CUDA
# (the fp16 gradient scaler only runs there), and, where Ray and FAISS are installed, the neighbour
# actor on a GPU (faiss-gpu, index_cpu_to_all_gpus) and a 1-worker --use-gpu Ray run.
#
#   bash benchmarks/gpu_checks.sh prepare      # here, with network: fills .gpu-carry/
#   bash benchmarks/gpu_checks.sh run          # on the GPU machine; writes to $OUT (or ./gpu-out)
#
# `prepare` downloads the few pure-Python wheels the training path needs that a bare CUDA image
# lacks (datasets and its dill/multiprocess, seqeval) for Python 3.12, and copies the bundled
# MiniLM's tokenizer and config (not its weights: the 64 MiB carry limit); `run` installs the
# wheels under /tmp/site and uses a random-weight MiniLM (the same shapes, so the same step
# time; training there only checks that the precision paths run, not quality). Each check has
# its own time limit and failure does not stop the others; the summary says what ran.
# On the project's device tool: run(command="bash benchmarks/gpu_checks.sh run",
# carry=[".gpu-carry"], timeout_s=600), after `prepare` and `echo /.gpu-carry/ >> .git/info/exclude`.
set -u
MODE=${1:-run}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARRY="$ROOT/.gpu-carry"
cd "$ROOT"

if [ "$MODE" = prepare ]; then
    mkdir -p "$CARRY/wheels" "$CARRY/minilm"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/wheels" datasets dill multiprocess || exit 1
    python3 -m pip download --no-deps -d "$CARRY/wheels" seqeval || exit 1
    python3 - "$CARRY/minilm" <<'EOF' || exit 1
import shutil, sys
from pathlib import Path
from hamr_dist.embeddings import default_model_path
src, dst = Path(default_model_path()), Path(sys.argv[1])
for f in src.iterdir():      # tokenizer and config only; weights are random on the GPU box
    if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".pt", ".onnx", ".h5")):
        shutil.copy(f, dst / f.name)
print("copied", sorted(p.name for p in dst.iterdir()))
EOF
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HAMR_MLFLOW=0 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$CARRY"/wheels/*.whl && export PYTHONPATH=/tmp/site:$ROOT
fi
export PYTHONPATH=${PYTHONPATH:-$ROOT}
LOG="$OUT/gpu_checks.log"
SUMMARY="$OUT/gpu_checks_summary.txt"
: > "$SUMMARY"
check() {   # check NAME SECONDS COMMAND...: run with a limit, log, record ok/failed
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "$name: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc, see gpu_checks.log)")" | tee -a "$SUMMARY"
}

check environment 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__,
    torch.cuda.get_device_name(0), \"bf16\", torch.cuda.is_bf16_supported())"'

# 1. step ratios: scopes and the head cost levers, fp32 and bf16, seq 64 and 128
for len in 64 128; do
    check "step_time_seq$len" 170 python3 -m benchmarks.step_time --device cuda --random-init \
        --scopes all top2 head --options mbs8 every4 reuse4 fuse --precisions fp32 bf16 \
        --seq-len $len --repeats 20 --warmup 3 --out-dir "$OUT" --name step_time_cuda_len$len
done

# 2. short trainings on CUDA: bf16 and fp16 (gradient scaler), scope head and all
MODEL="$CARRY/minilm"
python3 - "$MODEL" <<'EOF' >>"$LOG" 2>&1     # a random-weight MiniLM beside its tokenizer
import sys, torch
from pathlib import Path
from benchmarks.step_time import random_encoder
d = Path(sys.argv[1])
if d.is_dir() and not (d / "model.safetensors").exists():
    random_encoder(str(d) if (d / "config.json").exists() else None, eager=False).save_pretrained(d)
EOF
for prec in bf16 fp16; do
    for scope in head all; do
        check "train_${prec}_${scope}" 120 python3 -m hamr_dist.cli train --model "$MODEL" --embedder "$MODEL" \
            --no-freeze-encoder --method hamr --meta-scope $scope --$prec --num-train-epochs 2 \
            --max-train-samples 512 --max-eval-samples 128 --max-seq-length 64 \
            --learning-rate 1e-4 --output-dir "$OUT/runs/${prec}_${scope}" --no-progress
    done
done

# 3. Ray paths (need ray and faiss-gpu installed; the bare device image has neither)
if python3 -c "import ray, faiss; assert faiss.get_num_gpus() > 0" 2>>"$LOG"; then
    # a CPU worker leaves the GPU spare, so the neighbour actor takes it (faiss-gpu index)
    check ray_neighbour_actor_gpu 150 python3 -m hamr_dist.cli train --model "$MODEL" --embedder "$MODEL" \
        --num-workers 1 --freeze-encoder --num-train-epochs 2 --max-train-samples 2000 \
        --max-eval-samples 200 --output-dir "$OUT/runs/ray_neighbour_gpu" --no-progress
    check ray_one_gpu_worker 150 python3 -m hamr_dist.cli train --model "$MODEL" --embedder "$MODEL" \
        --num-workers 1 --use-gpu --bf16 --no-freeze-encoder --num-train-epochs 1 --max-train-samples 512 \
        --max-eval-samples 128 --max-seq-length 64 --output-dir "$OUT/runs/ray_gpu_worker" \
        --no-progress
    python3 - "$OUT/runs" <<'EOF' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
for run in ("ray_neighbour_gpu", "ray_gpu_worker"):
    p = Path(sys.argv[1]) / run / "metrics.json"
    if p.exists():
        m = json.loads(p.read_text())
        print(run, "neighbour actor:", m.get("ray", {}).get("neighbour_actor"),
              "workers:", m.get("ray", {}).get("workers"))
EOF
else
    echo "ray paths: SKIPPED (ray and/or faiss-gpu not importable here, or FAISS sees no GPU)" | tee -a "$SUMMARY"
fi
rm -rf "$OUT/runs"                     # model folders: too big to come back; metrics are in the log
cat "$SUMMARY"
