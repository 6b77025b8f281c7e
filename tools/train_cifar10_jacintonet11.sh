#!/usr/bin/env bash
# caffe-jacinto's sparse, quantized training flow, stage by stage, as TI's own
# scripts/train_cifar10_classification.sh runs it (caffe-jacinto-models, 2017):
#
#   initial (L2) -> l1reg (L1) -> threshold -> sparse fine-tune (zeros frozen)
#   -> test -> test_quantize (fixed point) -> optimize (fold BN) -> test of the folded model
#   -> final fine-tune (sparse + quantized, on the net without BatchNorm)
#
# JacintoNet11 v2 on Fashion-MNIST-32 by default (CIFAR-10 with --dataset cifar10), or LeNet
# on MNIST with --net lenet (tools/train_mnist_lenet_sparse_quant.sh). The stage files are the
# templates in models/jacintonet11/<dataset>/<stage>/ (models/lenet_sparse_quant/<stage>/),
# written into OUT/<stage>/ with the data folder, the output paths and the iteration counts
# substituted, as TI's script writes its solvers into training/<model>_<date>/<stage>/.
# Every command's log goes to OUT/<stage>/<stage>.log; the end prints (and writes to
# OUT/summary.txt) the accuracy after each stage and the per-layer sparsity after the
# threshold, the sparse fine-tune and the final fine-tune.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: tools/train_cifar10_jacintonet11.sh [options]

  --net NAME          jacintonet11 (default) or lenet
  --dataset NAME      jacintonet11: fashion-mnist-32 (default) or cifar10; lenet: mnist
  --data DIR          folder with the LMDBs (default data/<dataset>, as `caffe-lite data` builds it)
  --out DIR           output folder (default training/<net>_<dataset>_<date>)
  --initial-iter N    iterations of each training stage (defaults: see below)
  --l1reg-iter N
  --sparse-iter N
  --final-iter N
  --test-iter N       test batches per test (default: the model's test_iter, which covers
                      the test set at the model's test batch size)
  --batch N           training batch size (default: the model's, 64)
  --test-batch N      test batch size (default: the model's)
  --threshold-maxratio R   cap of the threshold as a fraction of a layer's max |w|
                      (default 0.2, TI's, for jacintonet11; 0.5 for lenet)
  --threshold-value-max V  absolute cap of the threshold (default 0.2, TI's)
  --from STAGE        start at STAGE (threshold, sparse, test, optimize or final) in an
                      existing --out folder, reusing the weights the earlier stages wrote
                      there: e.g. threshold again with other caps, without training again
  --quick             2-3 iterations per stage, batches of 4, 2 test batches: checks the
                      flow, not accuracy
  -h, --help          this text

Defaults: jacintonet11 2000 / 600 / 600 / 600 iterations (initial / l1reg / sparse / final,
batch 64, 1.2-1.5 s an iteration on 2 cores: about 80-90 minutes with the tests; TI's own
are 64000 / 64000 / 64000 / 32000);
lenet 10000 for each stage (Caffe's LeNet solver).
Environment: CAFFE_LITE, the command line to run (default caffe-lite).
EOF
}

. "$(dirname "${BASH_SOURCE[0]}")/flow_stages.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# a command line: CAFFE_LITE="python3 -m caffe_lite" runs the checkout without installing it
read -r -a caffe <<< "${CAFFE_LITE:-caffe-lite}"

net=jacintonet11 dataset="" data="" out="" quick=0
initial_iter="" l1reg_iter="" sparse_iter="" final_iter=""
test_iter="" batch="" test_batch="" maxratio="" value_max=0.2 from=initial
while [ $# -gt 0 ]; do
  case "$1" in
    --quick|-h|--help) ;;
    -*) [ $# -ge 2 ] || die "$1 needs a value" ;;
  esac
  case "$1" in
    --net) net=$2; shift 2 ;;
    --dataset) dataset=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --initial-iter) initial_iter=$2; shift 2 ;;
    --l1reg-iter) l1reg_iter=$2; shift 2 ;;
    --sparse-iter) sparse_iter=$2; shift 2 ;;
    --final-iter) final_iter=$2; shift 2 ;;
    --test-iter) test_iter=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --test-batch) test_batch=$2; shift 2 ;;
    --threshold-maxratio) maxratio=$2; shift 2 ;;
    --threshold-value-max) value_max=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
for n in "$initial_iter" "$l1reg_iter" "$sparse_iter" "$final_iter" "$test_iter" "$batch" \
         "$test_batch"; do
  [[ -z "$n" || "$n" =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive count"
done
stages=(initial l1reg threshold sparse test optimize final)
from_index=-1
for i in "${!stages[@]}"; do [ "${stages[$i]}" = "$from" ] && from_index=$i; done
[ "$from_index" -ge 0 ] || die "--from: unknown stage '$from' (one of: ${stages[*]})"
[ "$from" = initial ] || [ -n "$out" ] || die "--from $from needs the --out folder of an earlier run"
[ "$from" = initial ] || [ -d "$out" ] || die "--from $from: $out: no such folder"

# Per net: the templates, the data folder the templates name, the file stem of the
# snapshots, the stage lengths, and the threshold flags. TI's script thresholds with
# low 0.40 / mid 0.80 / high 0.80 (of a layer's weights), value_max 0.2, maxratio 0.2 and
# step factor 1e-6. By TI's size rules every LeNet layer is "low" (none has 32 inputs and 32
# outputs), so LeNet asks 0.80 of them too; its weights are less peaked than JacintoNet11's,
# so 0.2 * max |w| caps the threshold below 80% zeros, and LeNet's cap is 0.5 * max |w|.
case "$net" in
  jacintonet11)
    dataset=${dataset:-fashion-mnist-32}
    case "$dataset" in
      fashion-mnist-32) models=$root/models/jacintonet11/fashion_mnist ;;
      cifar10) models=$root/models/jacintonet11/cifar10 ;;
      *) die "jacintonet11 trains on fashion-mnist-32 or cifar10, not '$dataset'" ;;
    esac
    template_data=data/$dataset stem=jacintonet11v2
    lengths=(2000 600 600 600)
    fractions=(0.40 0.80 0.80) maxratio=${maxratio:-0.2} ;;
  lenet)
    dataset=${dataset:-mnist}
    [ "$dataset" = mnist ] || die "lenet trains on mnist, not '$dataset'"
    models=$root/models/lenet_sparse_quant
    template_data=data/mnist stem=lenet
    lengths=(10000 10000 10000 10000)
    fractions=(0.80 0.80 0.80) maxratio=${maxratio:-0.5} ;;
  *) die "unknown net '$net' (jacintonet11 or lenet)" ;;
esac
if [ "$quick" = 1 ]; then
  lengths=(2 2 2 3) test_iter=${test_iter:-2} batch=${batch:-4} test_batch=${test_batch:-4}
fi
initial_iter=${initial_iter:-${lengths[0]}} l1reg_iter=${l1reg_iter:-${lengths[1]}}
sparse_iter=${sparse_iter:-${lengths[2]}} final_iter=${final_iter:-${lengths[3]}}

data=${data:-data/$dataset}
case "$dataset" in
  fashion-mnist-32) build="caffe-lite data fashion-mnist -pad 2" ;;
  cifar10) build="caffe-lite data cifar10 -from cifar-10-binary.tar.gz" ;;
  mnist) build="caffe-lite data mnist" ;;
esac
[ -d "$data" ] || die "$data: no such folder (build it with: $build)"
data=$(cd "$data" && pwd)
out=${out:-training/${net}_${dataset}_$(date +'%Y-%m-%d_%H-%M-%S')}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The template's test_iter, unless --test-iter: `caffe-lite test` scores as many batches.
template_test_iter=$(sed -n 's/^test_iter: *//p' "$models/initial/solver.prototxt")
test_iter=${test_iter:-$template_test_iter}

# quant_start MAX_ITER: the iteration at which solver-level quantization starts. Its ranges
# are moving averages from 0 with weight 0.99 on the old value, at 1 - 0.99^n of the true
# range after n iterations (95% at 300, 99% at 460): an eighth of the stage (TI's 4000 of
# 32000) once that is 500 or more, else up to 500 but at most half the stage (TI's 2000 of
# 4000 in its May 2017 file).
quant_start() {
  local eighth=$(( ($1 + 7) / 8 )) half=$(( ($1 + 1) / 2 ))
  if [ "$eighth" -ge 500 ]; then echo "$eighth"
  elif [ "$half" -lt 500 ]; then echo "$half"
  else echo 500; fi
}

# stage_files STAGE MAX_ITER: OUT/STAGE/{train,test,deploy,solver}.prototxt from the
# templates. A stage tests once, at its end (the stage before has just been scored).
stage_files() {
  local stage=$1 iters=$2 dir=$out/$1 f
  mkdir -p "$dir"
  for f in train test deploy; do
    sed -e "s|\"$template_data/|\"$data/|" "$models/$stage/$f.prototxt" > "$dir/$f.prototxt"
  done
  [ -z "$batch" ] || sed -i -E "s/^( *batch_size: ).*/\1$batch/" "$dir/train.prototxt"
  [ -z "$test_batch" ] || sed -i -E "s/^( *batch_size: ).*/\1$test_batch/" "$dir/test.prototxt"
  sed -E -e "s|^train_net: .*|train_net: \"$dir/train.prototxt\"|" \
      -e "s|^test_net: .*|test_net: \"$dir/test.prototxt\"|" \
      -e "s|^snapshot_prefix: .*|snapshot_prefix: \"$dir/$stem\"|" \
      -e "s/^max_iter: .*/max_iter: $iters/" \
      -e "s/^snapshot: .*/snapshot: $iters/" \
      -e "s/^test_interval: .*/test_interval: $iters/" \
      -e "s/^test_iter: .*/test_iter: $test_iter/" \
      -e "s/^test_initialization: .*/test_initialization: false/" \
      -e "s/^display: .*/display: $(( (iters + 19) / 20 ))/" \
      -e "s/^display_sparsity: .*/display_sparsity: $iters/" \
      -e "s/^quantization_start_iter: .*/quantization_start_iter: $(quant_start "$iters")/" \
      "$models/$stage/solver.prototxt" > "$dir/solver.prototxt"
}


train_stage() {   # train_stage STAGE ITERS [WEIGHTS]
  local stage=$1 iters=$2 weights=${3:-}
  stage_files "$stage" "$iters"
  run "$stage" "${caffe[@]}" train -solver "$out/$stage/solver.prototxt" ${weights:+-weights "$weights"}
  [ -f "$(weights_of "$stage" "$iters")" ] || die "stage $stage wrote no $(weights_of "$stage" "$iters")"
}

test_stage() {    # test_stage STAGE MODEL WEIGHTS
  run "$1" "${caffe[@]}" test -model "$2" -weights "$3" -iterations "$test_iter"
}

# wants STAGE: true unless --from names a later stage; then STAGE's output must be there.
wants() {
  local i
  for i in "${!stages[@]}"; do [ "${stages[$i]}" = "$1" ] && break; done
  [ "$i" -ge "$from_index" ] && return 0
  local made
  case "$1" in
    threshold|optimize) made=$out/$1/$stem.caffemodel ;;
    test) return 1 ;;
    *) made=$(weights_of "$1" "$2") ;;
  esac
  [ -f "$made" ] || die "--from $from: stage $1 has not written $made (run it first)"
  echo "== $1: kept from the earlier run ($made)"
  return 1
}

echo "$net on $dataset ($data) into $out"
echo "iterations: initial $initial_iter, l1reg $l1reg_iter, sparse $sparse_iter, final $final_iter; test batches $test_iter"

! wants initial "$initial_iter" || train_stage initial "$initial_iter"
! wants l1reg "$l1reg_iter" || train_stage l1reg "$l1reg_iter" "$(weights_of initial "$initial_iter")"

if wants threshold; then
mkdir -p "$out/threshold"
run threshold "${caffe[@]}" threshold -model "$out/l1reg/deploy.prototxt" \
  -weights "$(weights_of l1reg "$l1reg_iter")" -output "$out/threshold/$stem.caffemodel" \
  -threshold_fraction_low "${fractions[0]}" -threshold_fraction_mid "${fractions[1]}" \
  -threshold_fraction_high "${fractions[2]}" -threshold_value_max "$value_max" \
  -threshold_value_maxratio "$maxratio" -threshold_step_factor 1e-6
test_stage threshold_test "$out/l1reg/test.prototxt" "$out/threshold/$stem.caffemodel"
fi

# The sparse solver keeps every zero of the thresholded convolutions (sparse_mode:
# SPARSE_UPDATE). JacintoNet11's, TI's, also thresholds during training towards
# sparsity_target 0.8 from iteration 4000: in a stage that long, it adds zeros only where
# the threshold stage left the convolutions below the target.
! wants sparse "$sparse_iter" || train_stage sparse "$sparse_iter" "$out/threshold/$stem.caffemodel"
sparse_weights=$(weights_of sparse "$sparse_iter")

# test also writes the test nets that optimize and its test use
stage_files test 1
if wants test; then
test_stage test "$out/test/test.prototxt" "$sparse_weights"
stage_files test_quantize 1
test_stage test_quantize "$out/test_quantize/test.prototxt" "$sparse_weights"
fi

if wants optimize; then
mkdir -p "$out/optimize"
run optimize "${caffe[@]}" optimize -model "$out/test/deploy.prototxt" -weights "$sparse_weights" \
  -output "$out/optimize/$stem.caffemodel"
# The folded BatchNorm layers are identities now: the test net scores the folded weights.
test_stage optimize_test "$out/test/test.prototxt" "$out/optimize/$stem.caffemodel"
fi

# The final net has no BatchNorm (TI's 2017 jacintonet11_nobn_train_final): the folded
# convolutions load by name, the identity BatchNorm layers are left out.
train_stage final "$final_iter" "$out/optimize/$stem.caffemodel"

# The summary, from the logs: `caffe-lite train` ends with "Test net output #0: accuracy...",
# `caffe-lite test` with "accuracy... = x"; threshold and display_sparsity log
# "Sparsity #i: layer = fraction (zeros/count)" blocks.
python3 - "$out" "$net on $dataset" <<'PY' | tee "$out/summary.txt"
import re
import sys
from pathlib import Path

out, title = Path(sys.argv[1]), sys.argv[2]
ACCURACY = re.compile(r"(?:\] |Test net output #\d+: )accuracy(?:/top1)? = (\S+)")
SPARSITY = re.compile(r"Sparsity #\d+: (\S+) = (\S+) \((\d+)/(\d+)\)")
TOTAL = re.compile(r"Total sparsity = (\S+) \((\d+)/(\d+)\)")
TARGET = re.compile(r"\] (\S+): ni=\d+ no=\d+:? (?:fraction=(\S+)|left alone)")
FOLDED = re.compile(r"Folded BatchNorm (\S+)")
STAGES = [("initial", "initial (L2)"), ("l1reg", "l1reg (L1)"),
          ("threshold_test", "threshold"), ("sparse", "sparse fine-tune"),
          ("test", "test (sparse)"), ("test_quantize", "test_quantize (sparse, fixed point)"),
          ("optimize_test", "optimize (BN folded)"),
          ("final", "final (sparse, fixed point, no BN)")]


def log(stage):
    path = out / stage / f"{stage}.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def last_block(text):
    """{layer: 'fraction (zeros/count)'} of the last sparsity report, its total under None."""
    block = {}
    for line in text.splitlines():
        if line.rstrip().endswith("(fraction of zero weights):"):
            block = {}
        elif (m := SPARSITY.search(line)):
            block[m[1]] = f"{float(m[2]):.4f} ({m[3]}/{m[4]})"
        elif (m := TOTAL.search(line)):
            block[None] = f"{float(m[1]):.4f} ({m[2]}/{m[3]})"
    return block


print(f"== {title}: summary ({out})")
print(f"{'stage':34s} accuracy")
for stage, label in STAGES:
    text = log(stage)
    found = ACCURACY.findall(text)
    # a NaN loss makes Caffe's Accuracy count every sample right: say so beside the score
    note = "  (diverged: the loss became nan)" if re.search(r"loss = -?nan", text) else ""
    print(f"{label:34s} {float(found[-1]):.4f}{note}" if found else f"{label:34s} n/a")
folded = FOLDED.findall(log("optimize"))
print(f"optimize folded {len(folded)} BatchNorm layers into their convolutions" if folded
      else "optimize folded nothing: the net has no BatchNorm after a convolution")
targets = {m[1]: m[2] or "-" for m in TARGET.finditer(log("threshold"))}
columns = [last_block(log(s)) for s in ("threshold", "sparse", "final")]
print()
print("per-layer sparsity (fraction of zero weights; target: the threshold's, - left alone)")
print(f"{'layer':18s} {'target':>6s}  {'after threshold':26s} {'after sparse':26s} after final")
for name in list(columns[0]) + [n for n in columns[2] if n not in columns[0]]:
    cells = [c.get(name, "n/a") for c in columns]
    label = "total" if name is None else name
    print(f"{label:18s} {targets.get(name, ''):>6s}  {cells[0]:26s} {cells[1]:26s} {cells[2]}")
PY
