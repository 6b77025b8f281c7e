# Shared by tools/train_mnist_lenet_dns.sh and tools/train_mnist_lenet_inq.sh (sourced): the
# options every MNIST flow takes, each stage's files written from the model templates, and
# running a stage with its log. The caller sets `flow_usage` (its --help text) and `stem`.

. "$(dirname "${BASH_SOURCE[0]}")/flow_stages.sh"     # die, run, weights_of

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# a command line: CAFFE_LITE="python3 -m caffe_lite" runs the checkout without installing it
read -r -a caffe <<< "${CAFFE_LITE:-caffe-lite}"

data="" out="" dense="" dense_iter="" test_iter="" batch="" quick=0
declare -A stage_iter=()

# parse_flow_options STAGE... -- ARGS: --data --out --dense --dense-iter --test-iter --batch
# --quick --help, and --<stage>-iter for each STAGE named
parse_flow_options() {
  local stages=() s
  while [ "$1" != -- ]; do stages+=("$1"); shift; done
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --quick|-h|--help) ;;
      -*) [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case "$1" in
      --data) data=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      --dense) dense=$2; shift 2 ;;
      --dense-iter) dense_iter=$2; shift 2 ;;
      --test-iter) test_iter=$2; shift 2 ;;
      --batch) batch=$2; shift 2 ;;
      --quick) quick=1; shift ;;
      -h|--help) echo "$flow_usage"; exit 0 ;;
      --*-iter)
        s=${1#--}; s=${s%-iter}
        [[ " ${stages[*]} " == *" $s "* ]] || { echo "$flow_usage" >&2; die "unknown option '$1'"; }
        stage_iter[$s]=$2; shift 2 ;;
      *) echo "$flow_usage" >&2; die "unknown option '$1'" ;;
    esac
  done
  for s in "$dense_iter" "$test_iter" "$batch" "${stage_iter[@]}"; do
    [[ -z "$s" || "$s" =~ ^[1-9][0-9]*$ ]] || die "'$s' is not a positive count"
  done
  [ -z "$dense" ] || [ -f "$dense" ] || die "--dense $dense: no such file"
  data=${data:-data/mnist}
  [ -d "$data" ] || die "$data: no such folder (build it with: caffe-lite data mnist)"
  data=$(cd "$data" && pwd)
  if [ "$quick" = 1 ]; then
    test_iter=${test_iter:-2} batch=${batch:-8} dense_iter=${dense_iter:-3}
  fi
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
}

# solver_value FILE FIELD: a top-level field of a solver template
solver_value() { sed -n "s/^$2: *//p" "$1" | tr -d '"'; }

# stage_files STAGE NET SOLVER ITERS: OUT/STAGE/{net,solver}.prototxt from the templates,
# with the data folder, the batch, the output paths and the iteration count substituted; the
# stage tests once, at its end, over --test-iter batches (default: the solver's test_iter)
stage_files() {
  local stage=$1 net=$2 solver=$3 iters=$4 dir=$out/$1
  mkdir -p "$dir"
  sed -e "s|\"data/mnist/|\"$data/|" "$root/$net" > "$dir/net.prototxt"
  if [ -n "$batch" ]; then
    sed -i -E "s/^( *batch_size: ).*/\1$batch/" "$dir/net.prototxt"
  fi
  sed -E -e "s|^net: .*|net: \"$dir/net.prototxt\"|" \
      -e "s|^snapshot_prefix: .*|snapshot_prefix: \"$dir/$stem\"|" \
      -e "s/^max_iter: .*/max_iter: $iters/" \
      -e "s/^snapshot: .*/snapshot: $iters/" \
      -e "s/^test_interval: .*/test_interval: $iters/" \
      -e "s/^test_iter: .*/test_iter: ${test_iter:-$(solver_value "$root/$solver" test_iter)}/" \
      -e "s/^display: .*/display: $(( (iters + 19) / 20 ))/" \
      "$root/$solver" > "$dir/solver.prototxt"
  echo "test_initialization: false" >> "$dir/solver.prototxt"
}


# train_stage STAGE NET SOLVER ITERS [WEIGHTS]: the solver run; its final caffemodel must exist
train_stage() {
  local stage=$1 iters=$4 weights=${5:-}
  stage_files "$stage" "$2" "$3" "$iters"
  run "$stage" "${caffe[@]}" train -solver "$out/$stage/solver.prototxt" ${weights:+-weights "$weights"}
  [ -f "$(weights_of "$stage" "$iters")" ] || die "stage $stage wrote no $(weights_of "$stage" "$iters")"
}

# dense_stage: the README's main job (models/lenet), unless --dense gave its caffemodel,
# which is then scored on the test set; sets dense to the weights
dense_stage() {
  if [ -n "$dense" ]; then
    stage_files dense models/lenet/lenet_train_test.prototxt models/lenet/lenet_solver.prototxt 1
    run dense "${caffe[@]}" test -model "$out/dense/net.prototxt" -weights "$dense" \
      -iterations "${test_iter:-$(solver_value "$root/models/lenet/lenet_solver.prototxt" test_iter)}"
    return
  fi
  local iters=${dense_iter:-$(solver_value "$root/models/lenet/lenet_solver.prototxt" max_iter)}
  train_stage dense models/lenet/lenet_train_test.prototxt models/lenet/lenet_solver.prototxt "$iters"
  dense=$(weights_of dense "$iters")
}

# accuracy STAGE: the last accuracy of the stage's log: "Test net output #i: accuracy = x"
# (train) or "] accuracy = x" (test)
accuracy() {
  local log=$out/$1/$1.log
  [ -f "$log" ] && sed -n -E 's/.*(Test net output #[0-9]+: |\] )accuracy = ([0-9.]+).*/\2/p' "$log" |
    tail -n 1
}
