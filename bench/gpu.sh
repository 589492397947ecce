#!/usr/bin/env bash
# Every GPU measurement issue 13 asks for, in one device call (or a few).
#
#   bench/gpu.sh [--smoke] [--budget SECONDS] [STAGE ...]
#   STAGE: env kernels train sweep bf16 tests | all (default: all)
#   SMOKE=1 bench/gpu.sh all      tiny sizes: proves the script on a CPU
#
# Run from the repository root, with the project importable (PYTHONPATH=.: the
# device image has jax, flax, optax, pandas, pyarrow, scipy, matplotlib, pillow,
# pytest and torch; nothing is pip-installed). Output under ${OUT:-bench/gpu-out}:
#   gpu.log            everything the stages printed
#   summary.md         device, commit, versions, and every stage's Markdown
#   gpu-results.tgz    every JSON, Markdown and log, the sweep's results folder
#                      and report (re-packed after each stage, so a call cut off
#                      at its limit still brings back the stages that finished)
# Three files: the device tool brings back at most 8, two folders deep.
#
# Expected times on one H100 (ESTIMATES, nothing here has run on a GPU yet;
# first-call compile included). A 600 s call fits about:
#   call 1: env kernels train   ~8 min     call 2: sweep bf16   ~4 min
#   call 3: tests               ~5 min     (all at once does NOT fit 600 s)
# Each stage runs under a deadline: no stage starts, and a running stage is
# stopped, past --budget seconds (default 560) from the start, leaving time
# to pack the results.
#
# Environment:
#   OUT         results folder (the device tool sets it)
#   GPU_DATA    CIFAR-10 parquet folder (train.parquet, test.parquet). Default:
#               the first of .gpu-data/cifar10, shared/data/cifar10,
#               ../shared/data/cifar10, /work/shared/data/cifar10 that exists
#   PYTHON      interpreter (default python3)
#   SWEEP_GIT_COMMIT  the commit, where the copy has no .git (default: git
#               rev-parse HEAD, else the file .gpu-data/COMMIT)
#   TEST_WORKERS  pytest-xdist workers for the tests stage (default 4 where
#               xdist imports; 1 = serial)
#   PYTEST_STOP  tests stage: -x to stop at the first failure (default --maxfail=20)
#   SWEEP_RUNS  full-sweep runs (default 2: cold, then warm compile cache)
#   SMOKE       1: the same stages at tiny sizes (CPU, a few minutes)
#   KERNEL      conv formulation for the sweep stage (default auto)
#   ALLOW_CPU   1: run the full sizes even where jax finds no GPU (default: stop)
#   BUDGET_S    the deadline, as --budget (default 560; 3600 with SMOKE)

set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s)
BUDGET=${BUDGET_S:-}
SMOKE=${SMOKE:-0}
STAGES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --budget) BUDGET=$2; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
    all) STAGES+=(kernels train sweep bf16 tests) ;;
    env|kernels|train|sweep|bf16|tests) STAGES+=("$1") ;;
    *) echo "gpu.sh: unknown stage or option '$1' (env kernels train sweep bf16 tests all)" >&2
       exit 2 ;;
  esac
  shift
done
[ ${#STAGES[@]} -eq 0 ] && STAGES=(kernels train sweep bf16 tests)
# 560 s leaves a 600 s device call time to pack; a smoke run on a busy CPU is
# slower than the real thing on a GPU, so it gets an hour.
if [ -z "$BUDGET" ]; then [ "$SMOKE" = 1 ] && BUDGET=3600 || BUDGET=560; fi

PY=${PYTHON:-python3}
OUTDIR=${OUT:-$ROOT/bench/gpu-out}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
# Working files live outside $OUT (only 8 files come back); packed at the end.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sweep-gpu-XXXXXX")
CACHE=${GPU_CACHE:-${TMPDIR:-/tmp}/sweep-gpu-cache}  # kept between calls on a warm machine
mkdir -p "$CACHE/data" "$CACHE/jax"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SWEEP_CACHE="$CACHE/data"   # decoded CIFAR-10, shared by every stage
export MPLBACKEND=Agg
LOG="$OUTDIR/gpu.log"
SUMMARY="$OUTDIR/summary.md"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

# --- data and commit ---------------------------------------------------------
DATA=${GPU_DATA:-}
if [ -z "$DATA" ]; then
  for d in .gpu-data/cifar10 shared/data/cifar10 ../shared/data/cifar10 /work/shared/data/cifar10; do
    if [ -f "$d/train.parquet" ] && [ -f "$d/test.parquet" ]; then DATA=$(cd "$d" && pwd); break; fi
  done
fi
if [ -n "$DATA" ]; then export SWEEP_TEST_DATA="$DATA"; fi
if [ -z "${SWEEP_GIT_COMMIT:-}" ]; then
  SWEEP_GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || true)
  if [ -n "$SWEEP_GIT_COMMIT" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    SWEEP_GIT_COMMIT="$SWEEP_GIT_COMMIT+dirty"
  fi
  [ -z "$SWEEP_GIT_COMMIT" ] && [ -f .gpu-data/COMMIT ] && SWEEP_GIT_COMMIT=$(head -1 .gpu-data/COMMIT)
  [ -z "$SWEEP_GIT_COMMIT" ] && SWEEP_GIT_COMMIT=unknown
fi
export SWEEP_GIT_COMMIT

left() { echo $((BUDGET - ($(date +%s) - START))); }
declare -A STATUS
FAILED=0
SKIPPED=0

pack() {  # everything so far into one file that comes back
  tar czf "$OUTDIR/gpu-results.tgz.tmp" -C "$WORK" . && mv "$OUTDIR/gpu-results.tgz.tmp" "$OUTDIR/gpu-results.tgz"
}

# run STAGE_NAME LOGFILE CMD...: under the remaining budget, output to the log and a file
run() {
  local name=$1 file=$2; shift 2
  local t=$(left)
  if [ "$t" -lt 20 ]; then
    echo "[$name] SKIPPED: budget spent ($BUDGET s)"; STATUS[$name]="${STATUS[$name]:-}SKIPPED (budget); "
    SKIPPED=$((SKIPPED + 1)); return 1
  fi
  echo "[$name] $(date -u +%H:%M:%S) (${t} s of budget left): $*"
  local s0=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$t" "$@" > >(tee -a "$WORK/$file") 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - s0 ))
  if [ $rc -eq 0 ]; then
    echo "[$name] ok in ${dt} s"; STATUS[$name]="${STATUS[$name]:-}ok ${dt}s; "
  else
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      echo "[$name] STOPPED at the budget after ${dt} s"; STATUS[$name]="${STATUS[$name]:-}STOPPED at the budget after ${dt}s; "
    else
      echo "[$name] FAILED (exit $rc) after ${dt} s"; STATUS[$name]="${STATUS[$name]:-}FAILED rc=$rc after ${dt}s; "
    fi
    FAILED=$((FAILED + 1))
  fi
  return $rc
}

# --- env: device, commit, versions (always first) -----------------------------
stage_env() {
  {
    echo "# bench/gpu.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- stages: ${STAGES[*]}; smoke: $SMOKE; budget: $BUDGET s"
    echo "- commit: $SWEEP_GIT_COMMIT"
    echo "- data: ${DATA:-none found (set GPU_DATA)}"
    echo "- host: $(uname -srm); $(nproc) cores; python: $($PY -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  } > "$WORK/env.md"
  $PY - >> "$WORK/env.md" 2>&1 <<'EOF'
import importlib.metadata as md
names = ["jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin",
         "jax-cuda12-pjrt", "flax", "optax", "numpy", "pandas", "pyarrow", "scipy",
         "pillow", "pytest", "pytest-xdist", "torch", "nvidia-cudnn-cu13",
         "nvidia-cudnn-cu12", "nvidia-cublas", "nvidia-cuda-runtime"]
have = []
for n in names:
    try:
        have.append(f"{n} {md.version(n)}")
    except md.PackageNotFoundError:
        pass
print("- versions: " + ", ".join(have))
try:
    import jax
    devs = jax.devices()
    print(f"- jax backend: {jax.default_backend()}; devices: "
          + ", ".join(f"{d.device_kind}" for d in devs))
    try:
        from jax._src.lib import cuda_versions  # private: may move
        if cuda_versions is not None:
            print(f"- CUDA (as jax sees it): runtime {cuda_versions.cuda_runtime_get_version()}, "
                  f"cuDNN {cuda_versions.cudnn_get_version()}, "
                  f"driver {cuda_versions.cuda_driver_get_version()}")
    except Exception as e:
        print(f"- CUDA versions from jax: n/a ({type(e).__name__})")
    try:
        prec = jax.config.jax_default_matmul_precision
    except Exception as e:
        prec = f"n/a ({type(e).__name__})"
    print(f"- default matmul precision: {prec} "
          "(None: XLA's default, TF32 for f32 matmuls and convs on Hopper)")
except Exception as e:
    print(f"- jax failed to start: {type(e).__name__}: {e}")
EOF
  {
    echo
    echo '```'
    if command -v nvidia-smi >/dev/null; then nvidia-smi 2>&1 | head -40; else echo "nvidia-smi: not on this machine"; fi
    echo '```'
  } >> "$WORK/env.md"
  $PY -c "import jax; jax.print_environment_info()" > "$WORK/jax_environment_info.txt" 2>&1 || true
  cat "$WORK/env.md"
  STATUS[env]="ok"
}

# --- kernels: every conv formulation per layer, then the whole step -----------
# GPU ~4-5 min (estimate): per layer 3 layers x 5 R x 7 formulations x (fwd,
# train) small compiles; whole step 5 R x 8 formulations, one compile each.
stage_kernels() {
  if [ "$SMOKE" = 1 ]; then
    run kernels kernels_layers.log $PY bench/kernels_bench.py --per-layer --layers conv1 \
      --replicas 2 --batch 4 --repeats 1 --warmup 0 --inner 1 \
      --convs vmap,im2col,grouped,blockdiag,shared --out "$WORK/kernels_layers.json"
    run kernels kernels_step.log $PY bench/kernels_bench.py --replicas 2 --batch 8 \
      --repeats 1 --warmup 0 --convs im2col,shared,auto --no-flax --out "$WORK/kernels_step.json"
  else
    run kernels kernels_layers.log $PY bench/kernels_bench.py --per-layer \
      --replicas 8,16,32,64,96 --batch 128 --repeats 5 --warmup 1 --inner 10 \
      --out "$WORK/kernels_layers.json"
    # map (R convolutions in a loop) is timed per layer only.
    run kernels kernels_step.log $PY bench/kernels_bench.py --replicas 8,16,32,64,96 \
      --convs vmap,im2col,unroll,grouped,blockdiag,shared,auto \
      --repeats 7 --warmup 1 --torch-python "$PY" --out "$WORK/kernels_step.json"
  fi
  pack
}

# --- train: train_bench (a)-(d), R-scaling to 96, memory per replica ----------
# GPU ~3-4 min (estimate): 10 R values x one scan-epoch compile, (b) 48 replicas
# x 100 host-fed steps, (c)/(d) 2 x 100 steps; then bf16 engine-only ~1 min.
stage_train() {
  local data=()
  [ -n "$DATA" ] && data=(--data "$DATA") || echo "[train] no CIFAR-10 found: synthetic images (set GPU_DATA)"
  if [ "$SMOKE" = 1 ]; then
    run train train.log $PY bench/train_bench.py --quick "${data[@]}" --steps 2 --replicas 1,2 \
      --compare-replicas 2 --sequential 1 --repeats 1 --warmup 1 --eval-images 100 \
      --chunk 2 --json "$WORK/train_gpu.json"
  else
    run train train.log $PY bench/train_bench.py "${data[@]}" \
      --replicas 1,2,4,8,16,32,48,64,96 --compare-replicas 48 \
      --json "$WORK/train_gpu.json"
    run train train_bf16.log $PY bench/train_bench.py "${data[@]}" --compute-dtype bfloat16 \
      --replicas 1,8,48,96 --compare-replicas 48 --skip b,c,d \
      --json "$WORK/train_gpu_bf16.json"
  fi
  pack
}

# --- sweep: the default sweep end to end, and its own answer -------------------
# GPU ~2-4 min (estimate; the target is < 10 s of training per run): data load
# and decode once (cached), 48 replicas x 5 epochs x 50,000 images, run twice
# (cold, then warm compile cache), then `python -m sweep report` on the last.
stage_sweep() {
  if [ -z "$DATA" ] && [ "$SMOKE" != 1 ]; then
    echo "[sweep] FAILED: no CIFAR-10 parquet (set GPU_DATA or carry .gpu-data)"; STATUS[sweep]="FAILED no data"
    FAILED=$((FAILED + 1)); return
  fi
  if [ "$SMOKE" = 1 ]; then
    run sweep sweep.log $PY bench/train_bench.py --full-sweep --data sample --seeds 2 \
      --epochs 1 --train-size 200 --counts 1 --sweep-runs 1 \
      --keep "$WORK/sweep-results" --json "$WORK/full_sweep_gpu.json"
  else
    run sweep sweep.log $PY bench/train_bench.py --full-sweep --data "$DATA" \
      --kernel "${KERNEL:-auto}" \
      --sweep-runs "${SWEEP_RUNS:-2}" --keep "$WORK/sweep-results" \
      --json "$WORK/full_sweep_gpu.json"
  fi
  if [ -f "$WORK/sweep-results/metrics.parquet" ]; then
    run sweep sweep_report.log $PY -m sweep report "$WORK/sweep-results"
  fi
  pack
}

# --- bf16: clean accuracy in bf16 vs f32, paired by seed ----------------------
# GPU ~1-2 min (estimate): 2 x 8 clean replicas x 5 epochs x 50,000 images.
stage_bf16() {
  if [ "$SMOKE" = 1 ]; then
    run bf16 bf16.log $PY bench/bf16_accuracy.py --data sample --train-size 200 --seeds 2 \
      --epochs 1 --json "$WORK/bf16_gpu.json"
  elif [ -n "$DATA" ]; then
    run bf16 bf16.log $PY bench/bf16_accuracy.py --data "$DATA" --seeds 8 --epochs 5 \
      --json "$WORK/bf16_gpu.json"
  else
    echo "[bf16] FAILED: no CIFAR-10 parquet"; STATUS[bf16]="FAILED no data"; FAILED=$((FAILED + 1))
  fi
  pack
}

# --- tests: the suite without the slow end-to-end tests ------------------------
# GPU ~4-6 min (estimate; 18 min serial on the 2-core CPU, mostly compiles):
# pytest-xdist workers with a shared persistent compile cache, no preallocation.
# Not -x by default: on a first GPU run several tests may fail (tolerances,
# TF32, the regression digests), and a device call that stops at the first
# failure finds one per call; --maxfail=20 lists them in one. PYTEST_STOP=-x
# restores `python -m pytest -q -x -m "not slow"` exactly.
stage_tests() {
  local par=()
  local workers=${TEST_WORKERS:-4}
  if [ "$workers" -gt 1 ] && $PY -c "import xdist" 2>/dev/null; then
    par=(-n "$workers" --dist loadfile)
  fi
  if [ "$SMOKE" = 1 ]; then
    run tests tests.log $PY -m pytest -q -x -p no:cacheprovider tests/test_kernel_baselines.py -k shared
  else
    run tests tests.log env XLA_PYTHON_CLIENT_PREALLOCATE=false \
      JAX_COMPILATION_CACHE_DIR="$CACHE/jax" \
      $PY -m pytest -q ${PYTEST_STOP:---maxfail=20} -m "not slow" -p no:cacheprovider \
      -rfE --durations=15 --junitxml="$WORK/tests.xml" "${par[@]}"
  fi
  pack
}

stage_env
pack
# A full run on a CPU fallback (a CUDA plugin jax cannot load, say) would spend
# the whole device call at CPU speed: stop at once instead.
BACKEND=$($PY -c "import jax; print(jax.default_backend())" 2>/dev/null || echo none)
echo "jax backend: $BACKEND"
if [ "$SMOKE" != 1 ] && [ "$BACKEND" != gpu ] && [ "${ALLOW_CPU:-0}" != 1 ]; then
  echo "gpu.sh: jax's backend is '$BACKEND', not gpu: stopping (SMOKE=1 for a CPU check, ALLOW_CPU=1 to insist)."
  echo "See $WORK/jax_environment_info.txt in gpu-results.tgz."
  cp "$WORK/env.md" "$SUMMARY"; echo "- STOPPED: jax backend $BACKEND" >> "$SUMMARY"
  pack; sleep 1; exit 3
fi
for s in "${STAGES[@]}"; do
  [ "$s" = env ] && continue
  "stage_$s"
done

# --- summary: env + every stage's Markdown + status ---------------------------
{
  cat "$WORK/env.md"
  echo
  echo "## Stages"
  echo
  for s in "${STAGES[@]}"; do echo "- $s: ${STATUS[$s]:-not run}"; done
  for f in kernels_layers.md kernels_step.md train_gpu.md train_gpu_bf16.md full_sweep_gpu.md; do
    if [ -f "$WORK/$f" ]; then echo; cat "$WORK/$f"; fi
  done
  if [ -f "$WORK/sweep-results/report.md" ]; then
    echo; echo "## The sweep's own report (sweep-results/report.md)"; echo
    cat "$WORK/sweep-results/report.md"
  fi
  if [ -f "$WORK/bf16.log" ]; then
    echo; echo "## bf16 accuracy"; echo; grep '^|' "$WORK/bf16.log"
  fi
  if [ -f "$WORK/tests.log" ]; then
    echo; echo "## Tests (failures, then the tail)"; echo; echo '```'
    grep -E '^(FAILED|ERROR) ' "$WORK/tests.log" | head -40; tail -5 "$WORK/tests.log"; echo '```'
  fi
  echo
  echo "Total $(( $(date +%s) - START )) s; failed: $FAILED; skipped for the budget: $SKIPPED."
} > "$SUMMARY"
cp "$SUMMARY" "$WORK/summary.md"
pack
echo "gpu.sh: done in $(( $(date +%s) - START )) s, $FAILED failed, $SKIPPED skipped; $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')"
rm -rf "$WORK"
sleep 1  # let tee write the log's last lines
exit $(( FAILED + SKIPPED > 0 ? 1 : 0 ))
