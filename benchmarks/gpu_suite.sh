#!/usr/bin/env bash
# All benchmarks on one GPU in one go (the command behind the GPU tables of benchmarks/README.md).
# Usage: bash benchmarks/gpu_suite.sh [OUTDIR]
#   STEPS="tests md md64 qeq es pme ani ani64 sr sync" (default: all) picks steps;
#   DEVICE=cpu SMALL=1 gives a quick dry run on the CPU.
# Each step has its own time limit so that one slow step cannot starve the others.
set -u
OUT_DIR=${1:-benchmarks/gpu_out}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-tests md md64 qeq es pme ani ani64 sr sync}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu.log"
export PYTHONUNBUFFERED=1 TORCHANI_NO_WARN_EXTENSIONS=1
cd "$(dirname "$0")"
if [ "${SMALL:-0}" = 1 ]; then
  MD="512 1000"; MD64="512"; QEQ="512 1000"; ES="512 1000"; PME="1000"; ANI="125 1000"; SR="125 1000"; SYNC=512
else
  MD="4096 32768 97336 262144"; MD64="4096 32768 97336"; QEQ="1000 4096 17576 97336"; ES="1000 4096 8000 27000 97336"
  PME="8000 27000 97336"; ANI="1000 3375 10648 32768 97336"; SR="1000 10648 97336"; SYNC=4096
fi
want() { [[ " $STEPS " == *" $1 "* ]]; }
step() {  # step SECONDS TITLE COMMAND...
  local limit=$1 title=$2; shift 2
  echo -e "\n===== $title  ($(date +%T), limit ${limit} s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "----- exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s" | tee -a "$LOG"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null;
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee -a "$LOG"
if want tests && [ "$DEVICE" = cuda ]; then
  step 75 "CUDA tests" python -m pytest -q -x -p no:cacheprovider ../tests/test_cuda.py ../tests/test_model.py -k cuda
fi
want md && step 120 "md_step float32" python md_step.py --device "$DEVICE" --dtype float32 --sizes $MD --repeats 3 \
  --plot "$OUT_DIR/md_step_gpu.png"
want md64 && step 60 "md_step float64" python md_step.py --device "$DEVICE" --dtype float64 --sizes $MD64 --repeats 3 --plot ""
want qeq && step 60 "qeq_scaling float64" python qeq_scaling.py --device "$DEVICE" --sizes $QEQ --dense-max 4096 --jacobi-max 17576
want es && step 50 "electrostatics_scaling 1e-5" python electrostatics_scaling.py --device "$DEVICE" --sizes $ES --ewald-max 4096 \
  --pme-variants 7:float64 7:float32 --plot "$OUT_DIR/electrostatics_scaling_gpu.png"
want pme && step 40 "pme_vs_torchpme float32 1e-4" python pme_vs_torchpme.py --device "$DEVICE" --sizes $PME --repeats 3
want ani && step 50 "vs_torchani float32" python vs_torchani.py --device "$DEVICE" --dtype float32 --sizes $ANI \
  --plot "$OUT_DIR/vs_torchani_gpu.png"
want ani64 && step 50 "vs_torchani float64" python vs_torchani.py --device "$DEVICE" --dtype float64 --sizes $ANI --plot ""
want sr && step 30 "short_range_scaling float32" python short_range_scaling.py --device "$DEVICE" --dtype float32 --sizes $SR \
  --plot "$OUT_DIR/short_range_gpu.png"
if want sync && [ "$DEVICE" = cuda ]; then
  step 30 "host-device synchronisations per step" python gpu_sync_count.py --n $SYNC
fi
exit 0
