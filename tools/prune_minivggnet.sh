#!/usr/bin/env bash
# The Xilinx ML-CIFAR10-Caffe tutorial's pruning of miniVggNet with DeePhi's tool, round by
# round, as its own pruning script runs `deephi_compress` (here `caffe-lite compress`):
#
#   (baseline training) -> ana (once) -> for config0..config7 (rates 0, 0.1, ..., 0.7):
#   compress -> finetune -> transform (removes the pruned channels) -> test, stat, time
#
# On Fashion-MNIST-32 by default (CIFAR-10 with --dataset cifar10). The config, solver and
# train_val files are the tutorial's, in models/minivggnet/pruning/ (fashion_mnist/ holds the
# one-channel train_val), written into OUT with the data folder, OUT as the workspace, the
# previous round's snapshot as each round's weights and the stage lengths substituted.
# OUT/float.caffemodel is the model pruned: --weights, or trained here first. Each command's
# log goes to OUT/<stage>/<command>.log (its stdout to .out); the end prints (and writes to
# OUT/summary.txt) the operations and weights removed per round and the accuracy after
# compress and after fine-tune, the transformed model's accuracy and sizes, and its speed
# against the baseline's.
set -euo pipefail

die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }

usage() {
  cat <<'EOF'
usage: tools/prune_minivggnet.sh [options]

  --dataset NAME      fashion-mnist-32 (default) or cifar10
  --data DIR          folder with the LMDBs (default data/<dataset>, as `caffe-lite data` builds it)
  --out DIR           output folder and DeePhi workspace
                      (default training/minivggnet_pruning_<dataset>_<date>)
  --weights FILE      the trained miniVggNet to prune; default: train one here first
  --train-iter N      iterations of that baseline training (default 3000)
  --finetune-iter N   iterations of each round's fine-tuning (default 1000; the tutorial's 40000)
  --test-iter N       test batches of ana, compress and the tests (default: the tutorial's 180,
                      9,000 images at its test batch of 50)
  --batch N           training batch size (default: the tutorial's 128)
  --test-batch N      test batch size (default: the tutorial's 50)
  --rounds LIST       the configs to run, in order (default 0,1,2,3,4,5,6,7); each round
                      prunes the previous one's fine-tuned model
  --from STAGE        start at STAGE (ana, round<K>, transform or time) in an existing --out
                      folder, reusing what the earlier stages wrote there
  --time-iter N       forward passes `caffe-lite time` averages (default 50)
  --quick             3 training and 2 fine-tuning iterations, batches of 4, 2 test batches,
                      2 timed passes: checks the flow, not accuracy
  -h, --help          this text

Defaults fit about 2 hours on 2 cores (miniVggNet trains at 0.3-0.6 s an iteration of 128
there; ana measures 37 x 9,000 test images).
Environment: CAFFE_LITE, the command line to run (default caffe-lite).
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# a command line: CAFFE_LITE="python3 -m caffe_lite" runs the checkout without installing it
read -r -a caffe <<< "${CAFFE_LITE:-caffe-lite}"

dataset=fashion-mnist-32 data="" out="" weights="" quick=0 from=""
train_iter="" finetune_iter="" test_iter="" batch="" test_batch="" time_iter=""
rounds=0,1,2,3,4,5,6,7
# needs OPTION ARGS...: the option has a value after it
needs() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) quick=1; shift ;;
    --dataset) needs "$@"; dataset=$2; shift 2 ;;
    --data) needs "$@"; data=$2; shift 2 ;;
    --out) needs "$@"; out=$2; shift 2 ;;
    --weights) needs "$@"; weights=$2; shift 2 ;;
    --train-iter) needs "$@"; train_iter=$2; shift 2 ;;
    --finetune-iter) needs "$@"; finetune_iter=$2; shift 2 ;;
    --test-iter) needs "$@"; test_iter=$2; shift 2 ;;
    --batch) needs "$@"; batch=$2; shift 2 ;;
    --test-batch) needs "$@"; test_batch=$2; shift 2 ;;
    --rounds) needs "$@"; rounds=$2; shift 2 ;;
    --from) needs "$@"; from=$2; shift 2 ;;
    --time-iter) needs "$@"; time_iter=$2; shift 2 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
for n in "$train_iter" "$finetune_iter" "$test_iter" "$batch" "$test_batch" "$time_iter"; do
  [[ -z "$n" || "$n" =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive count"
done
models=$root/models/minivggnet/pruning
case "$dataset" in
  fashion-mnist-32) net_dir=$models/fashion_mnist
                    build="caffe-lite data fashion-mnist -pad 2" ;;
  cifar10) net_dir=$models
           build="caffe-lite data cifar10 -from cifar-10-binary.tar.gz" ;;
  *) die "unknown dataset '$dataset' (fashion-mnist-32 or cifar10)" ;;
esac
IFS=, read -r -a round_list <<< "$rounds"
[ "${#round_list[@]}" -gt 0 ] || die "--rounds: no round"
for k in "${round_list[@]}"; do
  [ -f "$models/config$k.prototxt" ] || die "--rounds: no config$k.prototxt in $models"
done
stages=(baseline ana)
for k in "${round_list[@]}"; do stages+=("round$k"); done
stages+=(transform time)
from=${from:-baseline}
from_index=-1
for i in "${!stages[@]}"; do [ "${stages[$i]}" = "$from" ] && from_index=$i; done
[ "$from_index" -ge 0 ] || die "--from: unknown stage '$from' (one of: ${stages[*]})"
[ "$from" = baseline ] || [ -n "$out" ] ||
  die "--from $from needs the --out folder of an earlier run"
[ "$from" = baseline ] || [ -d "$out" ] || die "--from $from: $out: no such folder"
[ -z "$weights" ] || [ -f "$weights" ] || die "--weights: $weights: no such file"

if [ "$quick" = 1 ]; then
  train_iter=${train_iter:-3} finetune_iter=${finetune_iter:-2} test_iter=${test_iter:-2}
  batch=${batch:-4} test_batch=${test_batch:-4} time_iter=${time_iter:-2}
fi
train_iter=${train_iter:-3000} finetune_iter=${finetune_iter:-1000} time_iter=${time_iter:-50}
test_iter=${test_iter:-$(sed -n 's/^test_iter: *\([0-9]*\).*/\1/p' "$models/config0.prototxt")}

data=${data:-data/$dataset}
[ -d "$data" ] || die "$data: no such folder (build it with: $build)"
data=$(cd "$data" && pwd)
out=${out:-training/minivggnet_pruning_${dataset}_$(date +'%Y-%m-%d_%H-%M-%S')}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# run STAGE NAME COMMAND...: the command, its stdout in OUT/STAGE/NAME.out and its log
# (stderr) in OUT/STAGE/NAME.log; stops the flow on error.
run() {
  local stage=$1 name=$2 dir=$out/$1
  shift 2
  mkdir -p "$dir"
  echo "== $stage: $*"
  if ! "$@" > "$dir/$name.out" 2> "$dir/$name.log"; then
    tail -n 20 "$dir/$name.log" >&2
    die "stage $stage failed (log: $dir/$name.log)"
  fi
}

# wants STAGE: true unless --from names a later stage.
wants() {
  local i
  for i in "${!stages[@]}"; do [ "${stages[$i]}" = "$1" ] && break; done
  [ "$i" -ge "$from_index" ] && return 0
  echo "== $1: kept from the earlier run"
  return 1
}

rate_of() { sed -n 's/^rate: *\([0-9.]*\).*/\1/p' "$models/config$1.prototxt"; }
# regular_rate_<rate> as the tool names it (%g: 0.0 -> 0, 0.10 -> 0.1)
rate_dir() { echo "$out/regular_rate_$(printf '%g' "$(rate_of "$1")")"; }
snapshot_of() { echo "$(rate_dir "$1")/snapshots/_iter_$finetune_iter.caffemodel"; }

# The run's files: the train_val on this data, the solver with the fine-tuning length, and
# the baseline's solver; each round's config is written when the round starts. The solvers
# test once, at their end, without a test at iteration 0: their test then reads the batches
# that ana and compress score (from the start of the test set), so the accuracies compare.
sed -e "s|\"data/$dataset/|\"$data/|" "$net_dir/train_val.prototxt" > "$out/train_val.prototxt"
# the TRAIN data layer comes first, then the TEST one (the tutorial's order)
[ -z "$batch" ] || sed -i -E "0,/batch_size:/s/^( *batch_size: *)[0-9]+/\1$batch/" \
  "$out/train_val.prototxt"
[ -z "$test_batch" ] || sed -i -E \
  "/phase: TEST/,/batch_size:/s/^( *batch_size: *)[0-9]+/\1$test_batch/" "$out/train_val.prototxt"
solver_file() {   # solver_file ITERS PREFIX > file
  sed -E -e "s|^net: .*|net: \"$out/train_val.prototxt\"|" \
      -e "s|^snapshot_prefix: .*|snapshot_prefix: \"$2\"|" \
      -e "s/^max_iter: *[0-9]+/max_iter: $1/" \
      -e "s/^snapshot: *[0-9]+/snapshot: $1/" \
      -e "s/^test_interval: *[0-9]+/test_interval: $1/" \
      -e "s/^test_iter: *[0-9]+/test_iter: $test_iter/" \
      -e "s/^display: *[0-9]+/display: $(( ($1 + 19) / 20 ))/" \
      -e '$a test_initialization: false' \
      "$models/solver.prototxt"
}
solver_file "$finetune_iter" "$out/snapshot_" > "$out/solver.prototxt"
solver_file "$train_iter" "$out/float" > "$out/solver_float.prototxt"

config_file() {   # config_file K WEIGHTS > file
  sed -E -e "s|^workspace: .*|workspace: \"$out\"|" \
      -e "s|^model: .*|model: \"$out/train_val.prototxt\"|" \
      -e "s|^solver: .*|solver: \"$out/solver.prototxt\"|" \
      -e "s|^weights: .*|weights: \"$2\"|" \
      -e "s/^test_iter: *[0-9]+/test_iter: $test_iter/" \
      "$models/config$1.prototxt"
}

echo "miniVggNet pruning on $dataset ($data) into $out"
echo "baseline ${weights:-trained here, $train_iter iterations}; rounds ${round_list[*]}," \
  "fine-tuning $finetune_iter iterations each; test batches $test_iter"

if wants baseline; then
  if [ -n "$weights" ]; then
    cp "$weights" "$out/float.caffemodel"
  else
    run baseline train "${caffe[@]}" train -solver "$out/solver_float.prototxt"
    cp "$out/float_iter_$train_iter.caffemodel" "$out/float.caffemodel"
  fi
fi

first=${round_list[0]}
config_file "$first" "$out/float.caffemodel" > "$out/config$first.prototxt"
! wants ana || run ana ana "${caffe[@]}" compress ana -config "$out/config$first.prototxt"

previous=""
for k in "${round_list[@]}"; do
  config_file "$k" "${previous:-$out/float.caffemodel}" > "$out/config$k.prototxt"
  previous=$(snapshot_of "$k")
  wants "round$k" || continue
  run "round$k" compress "${caffe[@]}" compress compress -config "$out/config$k.prototxt"
  sed -n '/^Compression summary/,/^Against/p' "$out/round$k/compress.out"
  run "round$k" finetune "${caffe[@]}" compress finetune -config "$out/config$k.prototxt"
  [ -f "$previous" ] || die "round $k wrote no $previous"
done

last=${round_list[${#round_list[@]}-1]}
final_dir=$(rate_dir "$last")
if wants transform; then
  run transform transform "${caffe[@]}" compress transform -model "$out/train_val.prototxt" \
    -weights "$(snapshot_of "$last")"
  run transform test_final "${caffe[@]}" test -model "$final_dir/final.prototxt" \
    -weights "$final_dir/transformed.caffemodel" -iterations "$test_iter"
  run transform test_masked "${caffe[@]}" test -model "$out/train_val.prototxt" \
    -weights "$(snapshot_of "$last")" -iterations "$test_iter"
  run transform stat_baseline "${caffe[@]}" compress stat -model "$out/train_val.prototxt"
  run transform stat_final "${caffe[@]}" compress stat -model "$final_dir/final.prototxt"
fi

# `caffe-lite time` (TEST forward) of deploy nets for batch 1 and 128: the tutorial's deploy
# net with this data's channels, and the same with the transformed model's num_output.
if wants time; then
  mkdir -p "$out/time"
  python3 - "$root/models/minivggnet/deploy_3_miniVggNet.prototxt" "$final_dir/final.prototxt" \
    "$out/train_val.prototxt" "$out/time" <<'PY'
import re
import sys

deploy, final, train_val, folder = sys.argv[1:]
text = open(deploy).read()
means = len(re.findall(r"mean_value:", open(train_val).read().split("phase: TEST")[1]))
channels = 1 if means == 1 else 3
counts = dict(re.findall(r'name: "(conv\d)"\s+type: "Convolution".*?num_output: (\d+)',
                         open(final).read(), re.S))
for batch in (1, 128):
    for kind in ("baseline", "final"):
        out = re.sub(r"shape \{dim: ?1 dim: ?3 ", f"shape {{dim: {batch} dim: {channels} ",
                     text)
        if kind == "final":
            for conv, n in counts.items():
                out = re.sub(rf'(name: "{conv}".*?num_output: *)\d+', rf"\g<1>{n}", out,
                             count=1, flags=re.S)
        open(f"{folder}/deploy_{kind}_b{batch}.prototxt", "w").write(out)
PY
  for b in 1 128; do
    for kind in baseline final; do
      run time "${kind}_b$b" "${caffe[@]}" time -model "$out/time/deploy_${kind}_b$b.prototxt" \
        -phase TEST -iterations "$time_iter"
    done
  done
fi

# The summary, from the logs: compress prints its table and the reduction against the full
# model; finetune's solver ends with "Test net output #i: top-1 = x".
python3 - "$out" "$dataset" "${round_list[@]}" <<'PY' | tee "$out/summary.txt"
import re
import sys
from pathlib import Path

out, dataset, rounds = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
FULL = re.compile(r"Against the full model: operations (\S+), weights (\S+);")
COMPRESSED = re.compile(r"^Compressed +(\S+) +(\S+) +(\S+)", re.M)
TESTED = re.compile(r"Test net output #\d+: top-1 = (\S+)")
BASELINE = re.compile(r"ana: baseline top-1 = (\S+)")
TEST_MEAN = re.compile(r"\] top-1 = (\S+)")
FORWARD = re.compile(r"Average Forward pass: (\S+) ms")


def log(stage, name, kind="log"):
    path = out / stage / f"{name}.{kind}"
    return path.read_text(errors="replace") if path.is_file() else ""


def rate(k):
    config = (out / f"config{k}.prototxt").read_text()
    return re.search(r"^rate: *(\S+)", config, re.M)[1]


print(f"== miniVggNet pruning on {dataset}: summary ({out})")
base = BASELINE.findall(log("ana", "ana"))
print(f"baseline top-1 (ana, the model pruned): {base[-1] if base else 'n/a'}")
print(f"{'round':6s} {'rate':>5s} {'ops removed':>12s} {'weights removed':>16s} "
      f"{'top-1 compress':>15s} {'top-1 fine-tune':>16s} {'operations':>12s} {'weights':>8s}")
for k in rounds:
    text = log(f"round{k}", "compress", "out")
    full = FULL.search(text)
    comp = COMPRESSED.search(text)
    tuned = TESTED.findall(log(f"round{k}", "finetune"))
    print(f"{k:6s} {rate(k):>5s} {full[1] if full else 'n/a':>12s} "
          f"{full[2] if full else 'n/a':>16s} {comp[1] if comp else 'n/a':>15s} "
          f"{tuned[-1] if tuned else 'n/a':>16s} {comp[3] if comp else 'n/a':>12s} "
          f"{comp[2] if comp else 'n/a':>8s}")
final = TEST_MEAN.findall(log("transform", "test_final"))
masked = TEST_MEAN.findall(log("transform", "test_masked"))
print(f"transformed model top-1 {final[-1] if final else 'n/a'} (the masked snapshot's: "
      f"{masked[-1] if masked else 'n/a'})")
for name in ("stat_baseline", "stat_final"):
    found = re.search(r"^DeePhi's count: (.*?) \(", log("transform", name, "out"), re.M)
    full = re.search(r"^Full count, with the fully connected layers: (.*)$",
                     log("transform", name, "out"), re.M)
    if found:
        print(f"{name[5:]:8s}: {found[1]}; full count: {full[1] if full else 'n/a'}")
for batch in (1, 128):
    times = [FORWARD.findall(log("time", f"{kind}_b{batch}")) for kind in ("baseline", "final")]
    if all(times):
        b, f = float(times[0][-1]), float(times[1][-1])
        print(f"TEST forward, batch {batch:3d}: baseline {b:.2f} ms, transformed {f:.2f} ms "
              f"({b / f:.2f}x)")
PY
