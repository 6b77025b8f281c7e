#!/usr/bin/env bash
# caffe-jacinto's sparse, quantized training flow for LeNet on MNIST (models/lenet_sparse_quant):
# the JacintoNet11 flow's stages, full length (10000 iterations each) by default. LeNet has no
# BatchNorm, so the optimize stage folds nothing. Options: tools/train_cifar10_jacintonet11.sh --help.
exec "$(dirname "${BASH_SOURCE[0]}")/train_cifar10_jacintonet11.sh" --net lenet "$@"
