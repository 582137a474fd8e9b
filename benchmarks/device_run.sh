#!/usr/bin/env bash
# The one command for the lent GPU machine (README "Results and benchmarks"), after
# `bash benchmarks/device_prepare.sh` here; the run carries .whl and .device:
#   run(command="bash benchmarks/device_run.sh", carry=[".whl", ".device"], timeout_s=420)
# It installs the carried wheels, then runs each step below under its own time limit (a step that fails
# or runs out of time does not stop the others; the whole stays within FSV_BUDGET seconds) and writes
# every log under $OUT (7 files): summary.txt (nvidia-smi, then one line per step: exit code, seconds),
# tests.log, models.log, e2e.log, frontend.log, studio.log, gpu.csv (nvidia-smi samples during e2e's
# streaming run).
# Rehearsal here, on the CPU, with small sizes, 3x the time limits and the packages that machine lacks
# blocked (the compile steps run out of time on a small CPU; the others should end with exit 0):
#   FSV_DEVICE=cpu FSV_BUDGET=2400 FSV_SITE=/tmp/fsv-site PYTHON=.venv/bin/python OUT=/tmp/fsv-out \
#     bash benchmarks/device_run.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/fsvideo-device-out}
BUDGET=${FSV_BUDGET:-390}
SITE=${FSV_SITE:-/tmp/site}
mkdir -p "$OUT"
if [ "${FSV_DEVICE:-cuda}" = cpu ]; then   # rehearsal: every step, small and fast
  export FSVIDEO_DEVICE_SIM=1
  DEV=cpu PREC=auto SIZE=64 FRAMES=6 SECS=0.25 BATCHES=1 REPEATS=1 DRAFTS="16 32" EDIT_END=0.25 SCALE=3
else
  DEV=cuda PREC=fp16 SIZE=1024 FRAMES=96 SECS=3 BATCHES="1 8" REPEATS=3 DRAFTS="64 128 256" EDIT_END=60 SCALE=1
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
  || { echo "wheel install failed" | tee "$OUT/summary.txt"; exit 1; }
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 FSVIDEO_SHARED="$PWD/.device/shared"
MEDIA=$FSVIDEO_SHARED/media/videos/other
HD=$MEDIA/lt-FP006542HD02.mp4
RUN=("$PY" benchmarks/device_run.py)

{ date -u; uname -m; nvidia-smi || echo "no nvidia-smi"
  "$PY" -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__,
'h264_nvenc' in av.codecs_available and 'PyAV has h264_nvenc' or 'PyAV has no h264_nvenc')"; } > "$OUT/summary.txt" 2>&1

step() {  # step NAME SECONDS LOG COMMAND...: run within min(SECONDS x SCALE, what is left of BUDGET)
  local name=$1 limit=$(($2 * SCALE)) log=$OUT/$3 left=$((BUDGET - SECONDS)) t0=$SECONDS rc
  shift 3
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then echo "$name: skipped (budget spent)" | tee -a "$OUT/summary.txt"; return; fi
  echo "===== $name ($limit s): $*" >> "$log"
  timeout -k 5 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  [ $rc = 124 ] && echo "(timed out after $limit s)" >> "$log"
  echo "$name: exit $rc, $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

# CUDA cases: fp16 precision, torch align / paste-back vs cv2, NVENC (the CPU-only cases of these files run too)
step tests 100 tests.log "${RUN[@]}" pytest -q -p no:cacheprovider -rs tests/test_precision.py \
  tests/test_faces_warp_torch.py tests/test_face_stages_warp.py tests/test_video_io.py::test_nvenc_is_used_when_it_opens \
  tests/test_video_io.py::test_encoder_choice_preset_and_threads
step models 60 models.log "${RUN[@]}" script benchmarks/models.py --device $DEV --precision $PREC \
  --sizes $((SIZE < 256 ? 256 : SIZE)) --batches $BATCHES --repeats $REPEATS
step e2e 120 e2e.log "${RUN[@]}" script benchmarks/pipeline.py --clip "$HD" --size $SIZE --seconds $SECS \
  --precision $PREC --detector recorded --skip-memory --gpu-log "$OUT/gpu.csv"
step edit 60 e2e.log "${RUN[@]}" edit --size $SIZE "$HD" --precision $PREC --device $DEV --end $EDIT_END
step frontend 60 frontend.log "${RUN[@]}" script benchmarks/frontend.py --clips 480p 1080p --frames $FRAMES \
  --size $SIZE --device $DEV --detector recorded
step studio 45 studio.log "${RUN[@]}" script benchmarks/studio.py --device $DEV --precision $PREC --size $SIZE \
  --drafts $DRAFTS --detector recorded --photo "$FSVIDEO_SHARED/media/images/wild/facerec-obama.jpg"
step models-compile 120 models.log "${RUN[@]}" script benchmarks/models.py --device $DEV --precision $PREC \
  --sizes $((SIZE < 256 ? 256 : SIZE)) --batches 4 --repeats $REPEATS --compile
step e2e-compile 120 e2e.log "${RUN[@]}" script benchmarks/pipeline.py --clip "$HD" --size $SIZE --seconds $SECS \
  --precision $PREC --detector recorded --skip-memory --compile
echo "total: $SECONDS s" | tee -a "$OUT/summary.txt"
