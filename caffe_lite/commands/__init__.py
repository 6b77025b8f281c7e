"""One module per group of commands; each registers with caffe_lite.cli.command.

MODULE_OF names the module of each command, so that `caffe-lite NAME` imports that module
alone (importing them all costs Numba's start-up even for `upgrade_net_proto_text`).
tests/test_cli_help.py checks it against what the modules register.
"""
MODULE_OF = {
    "bench": "bench",
    "compress": "compress",
    "deephi_compress": "compress",
    "compute_image_mean": "compute_image_mean",
    "convert_imageset": "convert_imageset",
    "data": "data",
    "optimize": "optimize",
    "plot": "plot",
    "stat": "stat",
    "test": "test",
    "threshold": "threshold",
    "time": "time",
    "train": "train",
    "upgrade_net_proto_text": "upgrade",
    "upgrade_net_proto_binary": "upgrade",
    "upgrade_solver_proto_text": "upgrade",
}
