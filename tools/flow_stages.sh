# Sourced by the training-flow scripts (tools/train_cifar10_jacintonet11.sh,
# tools/mnist_flow_lib.sh): the error exit, one stage's command with its log, and a stage's
# snapshot path. The caller sets `out` (the output folder) and `stem` (the snapshot stem).

die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }

# run STAGE COMMAND...: the command, its log in OUT/STAGE/STAGE.log; stops the flow on error.
run() {
  local stage=$1 log=$out/$1/$1.log
  shift
  mkdir -p "$out/$stage"
  echo "== $stage: $*"
  if ! "$@" > "$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "stage $stage failed (log: $log)"
  fi
}

weights_of() { echo "$out/$1/${stem}_iter_$2.caffemodel"; }
