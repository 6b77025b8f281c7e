"""The model-compression forks' rules, as pure functions over arrays and protobuf specs.

caffe-jacinto, SSL, DNS/INQ and DeePhi add training rules to Caffe: sparsity schedules,
thresholding, BN folding, fixed-point quantizers, group lasso, DNS/INQ rules, the
channel-pruning graph, stat. Each lives here as a table or a function (arrays and specs in,
arrays out; no net, no solver), called by layers, solver hooks and commands.

fork_fields.py says, for every fork field of the schema, whether caffe-lite honours it, it
has no effect on a CPU engine, or it is not implemented yet, and warns about the last kind.
"""
