#!/usr/bin/env bash
# GPU check for a lent CUDA machine (issue 12, item 3): one call, well under 8 minutes, prints numbers.
#
#   bash benchmarks/gpu_check.sh --prepare      # HERE, once: copy the pure-Python packages the GPU machine lacks
#                                               # (efficientnet_pytorch, pytest and its deps) into .gpu_carry/
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_carry"], timeout_s=540)   # ON the GPU machine
#
# The GPU machine has torch, numpy, opencv, pillow, einops, safetensors, pyyaml and tqdm, and no network: nothing
# is installed there. PyAV (104 MB with its FFmpeg libraries) is too large for the 64 MiB working tree, so the
# end-to-end video figure is measured on 30 decoded-in-memory 1080p frames per "video" (decode excluded) unless
# `import av` works there. Sections (each bounded by `timeout`, failures reported and the script goes on):
#   1. device and versions               4. MTCNN ms/frame at 1080p (batches of 8 frames)
#   2. pytest -m cuda (autocast parity)  5. end to end: 30-frame 1080p items/min (detect+crop+model), photos/s
#   3. model faces/s: 224/380 px, fp32/bf16, batch 32/256   6. training step images/s (train_step.py, bf16)
# Results also go to $OUT/gpu_check.txt when $OUT is set (the run tool brings that folder back).
# Status: written on a CPU-only machine; never run on a GPU yet (no GPU was lent to the session that wrote it).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

if [[ "${1:-}" == "--prepare" ]]; then
    site=$(python -c "import efficientnet_pytorch, os; print(os.path.dirname(os.path.dirname(efficientnet_pytorch.__file__)))")
    rm -rf .gpu_carry && mkdir -p .gpu_carry
    for pkg in efficientnet_pytorch pytest _pytest pluggy iniconfig packaging py.py; do
        [[ -e "$site/$pkg" ]] && cp -r "$site/$pkg" .gpu_carry/
    done
    du -sh .gpu_carry && echo "prepared: carry .gpu_carry with the run"
    exit 0
fi

export PYTHONPATH="$ROOT/src:$ROOT/.gpu_carry:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
LOG=${OUT:+$OUT/gpu_check.txt}
say() { echo "$@"; [[ -n "$LOG" ]] && echo "$@" >> "$LOG"; }
section() {  # section TITLE SECONDS CMD...
    local title=$1 limit=$2; shift 2
    say "== $title (limit ${limit}s)"
    local t0=$SECONDS
    if [[ -n "$LOG" ]]; then timeout "$limit" "$@" 2>&1 | tee -a "$LOG"; else timeout "$limit" "$@" 2>&1; fi
    local rc=${PIPESTATUS[0]}
    say "-- $title: exit $rc, $((SECONDS - t0)) s"
}

section "device" 30 bash -c 'nvidia-smi -L; python -c "import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0), \"bf16\", torch.cuda.is_bf16_supported())"'

section "pytest -m cuda" 150 python -m pytest tests/models/test_cuda.py -m cuda -q -p no:cacheprovider -rs

section "model faces/s" 120 python - <<'EOF'
import time, torch
from cevit.models import create_model
from cevit.models.optimize import optimize_for_inference
torch.backends.cudnn.benchmark = True
print(f"{'preset':28s} {'px':>4s} {'dtype':>6s} {'batch':>6s} {'faces/s':>9s}")
for preset in ("cross_efficient_vit_v1_224", "cross_efficient_vit_v1"):
    model = optimize_for_inference(create_model(preset).eval()).cuda()
    size = model.config.image_size
    for dtype in (torch.float32, torch.bfloat16):
        for batch in (32, 256):
            x = torch.randn(batch, 3, size, size, device="cuda")
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                for _ in range(3):
                    model(x)
                torch.cuda.synchronize()
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < 3.0:
                    model(x); n += batch
                torch.cuda.synchronize()
            rate = n / (time.perf_counter() - t0)
            print(f"{preset:28s} {size:4d} {str(dtype).split('.')[-1]:>6s} {batch:6d} {rate:9.0f}", flush=True)
EOF

section "MTCNN 1080p" 60 python - <<'EOF'
import time, numpy as np, torch
from PIL import Image
from cevit.faces import MTCNN
face = np.asarray(Image.open("src/cevit/samples/astronaut.jpg").convert("RGB").resize((360, 360)))
frames = []
for i in range(8):
    f = np.full((1080, 1920, 3), 70, np.uint8); f[300:660, 800 + 10 * i:1160 + 10 * i] = face; frames.append(f)
for max_side in (1280, 1920):
    det = MTCNN(device="cuda", max_side=max_side)
    det.detect(frames); torch.cuda.synchronize()
    t0 = time.perf_counter(); reps = 5
    for _ in range(reps):
        found = det.detect(frames)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / (reps * len(frames)) * 1000
    print(f"MTCNN max_side {max_side}: {ms:.1f} ms/frame (batch of 8 1080p frames), faces/frame {np.mean([len(x) for x in found]):.1f}")
EOF

section "end to end" 120 python - <<'EOF'
import time, numpy as np, torch
from PIL import Image
from cevit.inference.pipeline import load_model
det = load_model(device="cuda")
face = np.asarray(Image.open("src/cevit/samples/astronaut.jpg").convert("RGB").resize((360, 360)))
frames = []
for i in range(30):
    f = np.full((1080, 1920, 3), 70, np.uint8); f[300:660, 800 + 5 * i:1160 + 5 * i] = face; frames.append(f)
def item():  # one 30-frame 1080p "video" without decoding: detect + crop in chunks of 8, then the model
    timings = {"decode": 0.0, "detect": 0.0, "preprocess": 0.0, "model": 0.0}
    faces, crops = [], []
    for s in range(0, 30, 8):
        det._detect_and_crop(frames[s:s + 8], list(range(s, min(s + 8, 30))), timings, faces, crops)
    det._finish(faces, crops, timings)
    return len(faces)
item(); torch.cuda.synchronize()
t0 = time.perf_counter(); n = 0
while time.perf_counter() - t0 < 20:
    item(); n += 1
torch.cuda.synchronize()
print(f"30-frame 1080p items (decode excluded): {n / (time.perf_counter() - t0) * 60:.0f} per minute, one at a time")
try:
    import av  # noqa: F401
    print("PyAV present: run python benchmarks/analyze.py --device cuda --batch videos --count 20 for videos/min")
except ImportError:
    print("PyAV absent on this machine: videos/min with decoding not measured")
import tempfile, pathlib
with tempfile.TemporaryDirectory() as tmp:
    paths = []
    for i in range(40):
        p = pathlib.Path(tmp) / f"p{i}.jpg"; Image.fromarray(frames[i % 30]).save(p, quality=90); paths.append(p)
    for workers in (0, 4):
        t0 = time.perf_counter(); reports = list(det.analyze_many(paths, workers=workers))
        print(f"40 1080p photos, workers={workers}: {len(paths) / (time.perf_counter() - t0):.1f} photos/s, "
              f"errors {sum('error' in r for r in reports)}")
EOF

section "training step" 90 python benchmarks/train_step.py --device cuda --batches 64 256 --steps 5 --warmup 2 --amp bf16 --image-size 224

say "== done in ${SECONDS} s (not measured here: cevit train with its data pipeline and resume; see the issue)"
