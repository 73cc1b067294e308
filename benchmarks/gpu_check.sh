#!/usr/bin/env bash
# GPU check for a lent CUDA machine (issue 12, item 3): one call, within 8 minutes, prints every number the issue
# asks for. The work of each section is in benchmarks/gpu_check.py (one subcommand per section).
#
#   bash benchmarks/gpu_check.sh --prepare      # HERE, once: fill the gitignored .gpu_carry/ (11.6 MiB):
#                                               #   site/  efficientnet_pytorch, pytest + pluggy, iniconfig,
#                                               #          packaging, pygments (pure Python; the GPU machine lacks them)
#                                               #   faces/ 160 real LFW face crops (JPEG) + their face index, from
#                                               #          data/lfw_faces (--faces DIR; generated faces without one)
#                                               #   clips/ the generated 1080p clip as H.264 (fallback) and one public
#                                               #          1080p DFDC clip (3.9 MB) when ../shared has it
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_carry"], timeout_s=540)   # ON the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run      # HERE: every section on the CPU with tiny sizes (83-182 s here)
#
# The GPU machine has torch, numpy, opencv, pillow, einops, safetensors, pyyaml and tqdm, no network and no PyAV:
# nothing is installed there. Videos are decoded there with OpenCV (cv2.VideoCapture) patched in behind cevit.media
# (see benchmarks/gpu_check.py); the rest of the pipeline is the library's. Sections, with their time limits and the
# estimated time on an H200 with 16 cores (never measured: no GPU has run this script yet):
#   1. device and versions                                            limit  20 s, est.   5 s
#   2. pytest -m cuda (autocast parity, Detector on CUDA vs CPU)      limit 110 s, est.  60 s
#   3. model faces/s: 224/380 px, fp32/bf16, batch 32/256; through    limit  90 s, est.  60 s
#      Detector.score_faces; bf16/fp16 logits against the CPU's fp32
#   4. MTCNN ms/frame at 1080p (batches of 8 frames)                  limit  40 s, est.  15 s
#   5. end to end with decoding: 30-frame 1080p videos/min (generated limit 120 s, est.  80 s
#      clip and the public DFDC clip), photos/s
#   6. cevit train images/s with its data pipeline + resume check     limit 150 s, est.  70 s
#   7. training step on synthetic inputs (the ceiling), if time left  limit  40 s, est.  25 s
# Estimated total about 5.5 minutes.
# Each section is bounded by `timeout`, and by what is left of a total budget (CEVIT_GPU_CHECK_BUDGET, default
# 470 s); a failing section is reported and the script goes on. Results also go to $OUT/gpu_check.txt when $OUT is
# set (the run tool brings that folder back).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/.gpu_carry

if [[ "${1:-}" == "--prepare" ]]; then
    shift
    exec python benchmarks/gpu_check.py prepare --carry "$CARRY" "$@"
fi
DEVICE=${CEVIT_GPU_CHECK_DEVICE:-cuda}
[[ "${1:-}" == "--dry-run" ]] && DEVICE=cpu
TINY=""
[[ "$DEVICE" == "cpu" ]] && TINY=--tiny  # on the CPU every section runs with tiny sizes

export PYTHONPATH="$ROOT/src:$CARRY/site:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
BUDGET=${CEVIT_GPU_CHECK_BUDGET:-470}
LOG=${OUT:+$OUT/gpu_check.txt}
say() { echo "$@"; if [[ -n "$LOG" ]]; then echo "$@" >> "$LOG"; fi; }
section() {  # section TITLE SECONDS CMD...
    local title=$1 limit=$2; shift 2
    local left=$((BUDGET - SECONDS))
    if ((left < 10)); then say "== $title: skipped, the ${BUDGET} s budget is spent"; return; fi
    ((limit > left)) && limit=$left
    say "== $title (limit ${limit}s)"
    local t0=$SECONDS
    if [[ -n "$LOG" ]]; then timeout "$limit" "$@" 2>&1 | tee -a "$LOG"; else timeout "$limit" "$@" 2>&1; fi
    local rc=${PIPESTATUS[0]}
    say "-- $title: exit $rc$( ((rc == 124)) && echo ' (timed out)'), $((SECONDS - t0)) s"
}
PY=(python benchmarks/gpu_check.py --device "$DEVICE" --carry "$CARRY" $TINY)  # + the section's name

say "gpu_check: device $DEVICE${TINY:+ (tiny sizes)}, carry $( [[ -d $CARRY ]] && echo present || echo ABSENT )"
section "device" 20 bash -c 'nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; nproc; python -c "
import torch, numpy, cv2
cuda = torch.cuda.is_available()
print(\"python\", __import__(\"sys\").version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      torch.cuda.get_device_name(0) if cuda else \"(no CUDA)\", \"bf16\", cuda and torch.cuda.is_bf16_supported(),
      \"numpy\", numpy.__version__, \"opencv\", cv2.__version__)
try:
    import av; print(\"PyAV\", av.__version__)
except ImportError:
    print(\"PyAV absent: videos are decoded with OpenCV\")
"'
section "pytest -m cuda" 110 python -m pytest tests/models/test_cuda.py -m cuda -q -p no:cacheprovider -rs
section "model faces/s" 90 "${PY[@]}" model
section "MTCNN 1080p" 40 "${PY[@]}" mtcnn
section "end to end (decoding included)" 120 "${PY[@]}" e2e
section "cevit train images/s + resume" 150 "${PY[@]}" train
if [[ -z "$TINY" ]]; then  # the model's training ceiling without data loading, for comparison (if time is left)
    section "training step, synthetic inputs" 40 python benchmarks/train_step.py --device "$DEVICE" --batches 32 128 \
        --steps 5 --warmup 2 --amp bf16
fi
say "== done in ${SECONDS} s"
