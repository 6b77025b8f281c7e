"""Regularizers: Caffe's SGDSolver::Regularize, with the penalty looked up by name.

For learnable param i with data w and gradient g (both float32):

  local_decay = weight_decay * decay_mult_i        (decay_mult from the owner's ParamSpec)
  L2:  g += local_decay * w
  L1:  g += local_decay * sign(w)                  (sign(0) = 0, as caffe_cpu_sign)

The penalty is SolverParameter.regularization_type (default "L2"), or the param's own
ParamSpec.regularization_type where the schema has it and it is set (SSL's per-param override).
Nothing is added when local_decay is 0.

@register_regularizer("Name") adds an element-wise penalty `fn(data, diff, local_decay)` that
adds its gradient into `diff` in place, selectable by regularization_type. Terms that are not
element-wise (group lasso, per-element decay multipliers) are solver hooks' `regularize`
(solvers/hooks.py), run after this weight decay.
"""
import numpy as np

REGULARIZERS = {}

_f32 = np.float32


def register_regularizer(name):
    def wrap(fn):
        REGULARIZERS[name] = fn
        return fn
    return wrap


@register_regularizer("L2")
def l2(data, diff, local_decay):
    diff += _f32(local_decay) * data


@register_regularizer("L1")
def l1(data, diff, local_decay):
    diff += _f32(local_decay) * np.sign(data)


def param_regularization_type(solver_param, spec):
    """The penalty for one param: the ParamSpec override (SSL) or the solver's type."""
    if spec is not None and spec.regularization_type:
        return spec.regularization_type
    return solver_param.regularization_type


def local_decay(weight_decay, decay_mult):
    """weight_decay * decay_mult as Caffe's float Dtype computes it."""
    return _f32(weight_decay) * _f32(decay_mult)


def weight_decay(data, diff, kind, weight_decay, decay_mult):
    """Caffe's Regularize for one param: diff += local_decay * {w | sign(w)}."""
    decay = local_decay(weight_decay, decay_mult)
    if decay:
        REGULARIZERS[kind](data, diff, decay)


def resolve_types(solver_param, specs, where):
    """The penalty name of every learnable param; unknown names raise via `where`."""
    kinds = []
    for spec in specs:
        kind = param_regularization_type(solver_param, spec)
        if kind not in REGULARIZERS:
            known = ", ".join(sorted(REGULARIZERS))
            raise where("regularization_type",
                        f"Unknown regularization type: {kind} (known types: {known})")
        kinds.append(kind)
    return kinds
