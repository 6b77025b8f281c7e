"""Layer registry keyed by Caffe's type string (Caffe's LayerRegistry).

Each module in this package defines one layer type and registers it with @register; the
modules are imported on first use, so adding a layer is adding a file.
"""
import importlib
import pkgutil

from ..errors import CaffeError

LAYERS = {}
_loaded = False


def register(type_name, *aliases):
    def wrap(cls):
        cls.type = type_name
        for name in (type_name,) + aliases:
            if name in LAYERS and LAYERS[name] is not cls:
                raise RuntimeError(f"layer type {name} registered twice")
            LAYERS[name] = cls
        return cls
    return wrap


def _load_all():
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def layer_types():
    _load_all()
    return sorted(LAYERS)


def layer_class(type_name, where=None):
    """The class for `type_name`; `where` is a (path, line) for the error message."""
    _load_all()
    try:
        return LAYERS[type_name]
    except KeyError:
        path, line = where if where else (None, None)
        raise CaffeError(f"Unknown layer type: {type_name} (known types: "
                         f"{', '.join(sorted(LAYERS))})", path=path, line=line) from None


def create_layer(param, phase=0, dtype="float32", where=None):
    return layer_class(param.type, where)(param, phase, dtype)
