#!/usr/bin/env bash
# Incremental Network Quantization on LeNet / MNIST with NNMC's own step files
# (models/lenet_inq): each step is an ordinary solver run from the previous step's caffemodel,
# with nothing rebuilt between steps (INQ's portion is a field of the step's net):
#
#   dense    the README's main job (models/lenet), unless --dense gives a dense LeNet
#   inq_30   portion 0.0 -> 0.3 of every weight and bias quantized to {0, +-2^n2..2^n1}
#   inq_60   0.3 -> 0.6          inq_80   0.6 -> 0.8
#   inq_100  0.8 -> 1.0, one iteration (NNMC's lenet_solver_inq_100): everything quantized
#   stat     per layer, whether every weight is 0 or a power of two, with the exponents
#
# Every command's log goes to OUT/<stage>/<stage>.log; the end prints (and writes to
# OUT/summary.txt) the accuracy after each step and the stat table of the final model.
set -euo pipefail

flow_usage=$(cat <<'TEXT'
usage: tools/train_mnist_lenet_inq.sh [options]

  --data DIR        folder with the MNIST LMDBs (default data/mnist: caffe-lite data mnist)
  --out DIR         output folder (default training/lenet_inq_<date>)
  --dense FILE      a dense LeNet caffemodel to start from (skips the dense stage)
  --dense-iter N    iterations of the dense stage (default 10000, Caffe's LeNet solver)
  --inq_30-iter N   iterations of each re-training step (default 30000 each, NNMC's
  --inq_60-iter N   solvers; the last step, inq_100, runs its solver's 1 iteration)
  --inq_80-iter N
  --test-iter N     test batches of 100 (default 100: the whole test set)
  --batch N         training batch size (default: the models', 128)
  --quick           3 iterations per stage, batches of 8, 2 test batches: checks the flow
  -h, --help        this text
Environment: CAFFE_LITE, the command line to run (default caffe-lite).
TEXT
)
stem=lenet
. "$(dirname "${BASH_SOURCE[0]}")/mnist_flow_lib.sh"
args=("$@")
out=training/lenet_inq_$(date +'%Y-%m-%d_%H-%M-%S')
parse_flow_options inq_30 inq_60 inq_80 -- "${args[@]}"

echo "LeNet INQ on $data into $out"
dense_stage
weights=$dense
for step in 30 60 80 100; do
  solver=models/lenet_inq/lenet_solver_inq_$step.prototxt
  iters=${stage_iter[inq_$step]:-$( [ "$quick" = 1 ] && [ "$step" != 100 ] && echo 3 ||
                                   solver_value "$root/$solver" max_iter)}
  train_stage "inq_$step" "models/lenet_inq/lenet_train_test_inq_$step.prototxt" "$solver" \
    "$iters" "$weights"
  weights=$(weights_of "inq_$step" "$iters")
done
mkdir -p "$out/stat"
"${caffe[@]}" stat -model "$out/inq_100/net.prototxt" -weights "$weights" \
  > "$out/stat/stat.txt" 2> "$out/stat/stat.log" || { tail -n 20 "$out/stat/stat.log" >&2; die "stat failed"; }

{
  echo "== LeNet INQ: summary ($out)"
  echo "dense accuracy:    $(accuracy dense)${dense:+ (weights $dense)}"
  for step in 30 60 80 100; do
    printf '%-18s %s\n' "INQ $step% accuracy:" "$(accuracy "inq_$step")"
  done
  echo
  cat "$out/stat/stat.txt"
} | tee "$out/summary.txt"
