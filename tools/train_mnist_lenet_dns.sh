#!/usr/bin/env bash
# Dynamic Network Surgery on LeNet / MNIST with NNMC's own files (models/lenet_dns):
#
#   dense  the README's main job (models/lenet, 10000 iterations), unless --dense gives a
#          dense LeNet caffemodel
#   dns    NNMC's lenet_solver_DNS from the dense weights: DNSConvolution / DNSInnerProduct
#          cut and splice weights while training (masks saved in the caffemodel)
#   stat   per layer, the weights kept (caffe-lite stat on the DNS model)
#
# Every command's log goes to OUT/<stage>/<stage>.log; the end prints (and writes to
# OUT/summary.txt) the dense and DNS accuracies and the stat table.
set -euo pipefail

flow_usage=$(cat <<'TEXT'
usage: tools/train_mnist_lenet_dns.sh [options]

  --data DIR        folder with the MNIST LMDBs (default data/mnist: caffe-lite data mnist)
  --out DIR         output folder (default training/lenet_dns_<date>)
  --dense FILE      a dense LeNet caffemodel to start from (skips the dense stage)
  --dense-iter N    iterations of the dense stage (default 10000, Caffe's LeNet solver)
  --dns-iter N      iterations of the DNS stage (default 100000, NNMC's solver)
  --test-iter N     test batches of 100 (default 100: the whole test set)
  --batch N         training batch size (default: the models', 64 and 128)
  --quick           3 + 4 iterations, batches of 8, 2 test batches: checks the flow
  -h, --help        this text
Environment: CAFFE_LITE, the command line to run (default caffe-lite).
TEXT
)
stem=lenet
. "$(dirname "${BASH_SOURCE[0]}")/mnist_flow_lib.sh"

args=("$@")
out=training/lenet_dns_$(date +%Y-%m-%d_%H-%M-%S)
parse_flow_options dns -- "${args[@]}"
solver=models/lenet_dns/lenet_solver_dns.prototxt
dns_iter=${stage_iter[dns]:-$([ "$quick" = 1 ] && echo 4 || solver_value "$root/$solver" max_iter)}

echo "LeNet DNS on $data into $out"
dense_stage
train_stage dns models/lenet_dns/lenet_train_test_dns.prototxt "$solver" "$dns_iter" "$dense"
mkdir -p "$out/stat"
"${caffe[@]}" stat -model "$out/dns/net.prototxt" -weights "$(weights_of dns "$dns_iter")" \
  > "$out/stat/stat.txt" 2> "$out/stat/stat.log" || { tail -n 20 "$out/stat/stat.log" >&2; die "stat failed"; }

{
  echo "== LeNet DNS: summary ($out)"
  echo "dense accuracy: $(accuracy dense)${dense:+ (weights $dense)}"
  echo "DNS accuracy:   $(accuracy dns) after $dns_iter iterations"
  echo
  cat "$out/stat/stat.txt"
} | tee "$out/summary.txt"
