"""Regularizers: Caffe's SGDSolver::Regularize, with the penalty looked up by name.

For learnable param i with data w and gradient g (both float32):

  local_decay = weight_decay * decay_mult_i        (decay_mult from the owner's ParamSpec)
  L2:  g += local_decay * w
  L1:  g += local_decay * sign(w)                  (sign(0) = 0, as caffe_cpu_sign)

The penalty is SolverParameter.regularization_type (default "L2"), or the param's own
ParamSpec.regularization_type where the schema has it and it is set (SSL's per-param override).
Nothing is added when local_decay is 0.

Extension points for the forks:
  * @register_regularizer("Name"): a new element-wise penalty `fn(data, diff, local_decay)`
    that adds its gradient into `diff` in place; selectable by regularization_type.
  * register_regularization_term(fn): a whole extra term `fn(solver, param_id)` run after the
    weight decay for every learnable param (group lasso, per-element decay_proto, ...). A term
    reads its own solver fields and returns at once when they are zero.
"""
import numpy as np

REGULARIZERS = {}
#: terms every new solver runs per learnable param, in order (a solver copies this list)
REGULARIZATION_TERMS = []

_f32 = np.float32


def register_regularizer(name):
    def wrap(fn):
        REGULARIZERS[name] = fn
        return fn
    return wrap


def register_regularization_term(fn):
    if fn not in REGULARIZATION_TERMS:
        REGULARIZATION_TERMS.append(fn)
    return fn


@register_regularizer("L2")
def l2(data, diff, local_decay):
    diff += _f32(local_decay) * data


@register_regularizer("L1")
def l1(data, diff, local_decay):
    diff += _f32(local_decay) * np.sign(data)


def _has_field(message, name):
    return name in message.DESCRIPTOR.fields_by_name


def param_regularization_type(solver_param, spec):
    """The penalty for one param: the ParamSpec override (SSL) or the solver's type."""
    if spec is not None and _has_field(spec, "regularization_type"):
        own = spec.regularization_type
        if own:
            return own
    return solver_param.regularization_type


@register_regularization_term
def weight_decay(solver, param_id):
    local_decay = _f32(solver.param.weight_decay) * _f32(solver.net.params_weight_decay[param_id])
    if not local_decay:
        return
    blob = solver.net.learnable_params[param_id]
    kind = solver.regularization_types[param_id]
    REGULARIZERS[kind](blob.data, blob.diff, local_decay)


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
