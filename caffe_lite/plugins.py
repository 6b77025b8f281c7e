"""The modules that register the forks' solver hooks (solvers/hooks.py @hook_factory) and net
hooks (net_hooks.py @net_hook_factory).

They are imported once, the first time a solver or a net asks for its hooks, so that the core
never imports a fork module by name and a plain BVLC net pays nothing for them.
"""
import importlib

PLUGIN_MODULES = ("caffe_lite.compress.jacinto_quantize",
                  "caffe_lite.compress.jacinto_quantize_solver", "caffe_lite.compress.snapshot_log",
                  "caffe_lite.compress.jacinto_sparsity", "caffe_lite.compress.layer_qparams",
                  "caffe_lite.compress.ssl_training",
                  "caffe_lite.compress.dns_inq_training")

_loaded = False


def load_plugins():
    """Import every module of PLUGIN_MODULES (once per process)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in PLUGIN_MODULES:
        importlib.import_module(name)
