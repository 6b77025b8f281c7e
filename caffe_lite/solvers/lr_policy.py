"""Learning-rate policies: Caffe's SGDSolver::GetLearningRate, one function per `lr_policy`.

With base_lr, gamma, power, stepsize, stepvalue and max_iter from the SolverParameter and
`iter` the number of updates done so far:

  fixed      base_lr
  step       base_lr * gamma ^ floor(iter / stepsize)              (current_step = iter / stepsize)
  exp        base_lr * gamma ^ iter
  inv        base_lr * (1 + gamma * iter) ^ (-power)
  multistep  base_lr * gamma ^ current_step, where current_step advances by one when
             iter >= stepvalue[current_step] (logged "MultiStep Status: Iteration N, step = k")
  poly       base_lr * (1 - iter / max_iter) ^ power
  sigmoid    base_lr * 1 / (1 + exp(-gamma * (iter - stepsize)))

A policy is `fn(param, state) -> float32 rate`, where `state` has `iter` and a mutable
`current_step` (the solver itself, or any object with those two attributes). Forks add their
policies with @register_lr_policy("name").

Then, for every policy, NNMC's warm-up and floor (sgd_solver.cpp, FORK_FIELDS.md 4.2); with
their defaults (0) they change nothing:
  iter < rampup_interval:  rate = min(rate, rampup_lr + (rate - rampup_lr) * iter / rampup_interval)
  rate < min_lr:           rate = min_lr
NVCaffe 0.17 and caffe-jacinto 0.17 have fields of the same names with another rule (base_lr
ramped up quadratically in place of the policy, min_lr also inside poly); a text file does not
say which fork wrote it, and caffe-lite follows NNMC's (docs/fork_fields.md).

Numerics follow Caffe's float build: `pow(float, int)` promotes to double (step, exp,
multistep), `pow(float, float)` and `exp(float)` stay in float (inv, poly, sigmoid), and the
result is stored as a float.
"""
import numpy as np

from ..errors import CaffeError
from ..log import LOG

LR_POLICIES = {}
#: fields each policy reads, checked up front by validate_lr_policy (Caffe CHECKs them lazily)
REQUIRED = {}

_f32 = np.float32


def register_lr_policy(name, requires=()):
    def wrap(fn):
        LR_POLICIES[name] = fn
        REQUIRED[name] = tuple(requires)
        return fn
    return wrap


def get_learning_rate(param, state):
    try:
        policy = LR_POLICIES[param.lr_policy]
    except KeyError:
        raise CaffeError(f"Unknown learning rate policy: {param.lr_policy}") from None
    return _warm_up_and_floor(param, state.iter, policy(param, state))


def _warm_up_and_floor(param, iteration, rate):
    """NNMC's rampup_interval / rampup_lr warm-up and min_lr floor, in float as NNMC."""
    if iteration < param.rampup_interval:
        alpha = _f32(iteration) / _f32(param.rampup_interval)
        ramp = _f32(param.rampup_lr)
        rate = min(rate, _f32(ramp + (_f32(rate) - ramp) * alpha))
    return max(_f32(rate), _f32(param.min_lr))


def _pow_double(base, exponent):
    # std::pow(float, int) in C++11 computes in double
    return float(_f32(base)) ** exponent


@register_lr_policy("fixed")
def fixed(param, state):
    return _f32(param.base_lr)


@register_lr_policy("step", requires=("stepsize", "gamma"))
def step(param, state):
    state.current_step = state.iter // param.stepsize
    return _f32(float(_f32(param.base_lr)) * _pow_double(param.gamma, state.current_step))


@register_lr_policy("exp", requires=("gamma",))
def exp(param, state):
    return _f32(float(_f32(param.base_lr)) * _pow_double(param.gamma, state.iter))


@register_lr_policy("inv", requires=("gamma",))
def inv(param, state):
    base = _f32(1) + _f32(param.gamma) * _f32(state.iter)
    with np.errstate(over="ignore", divide="ignore"):
        return _f32(param.base_lr) * np.power(base, -_f32(param.power), dtype=_f32)


@register_lr_policy("multistep", requires=("gamma",))
def multistep(param, state):
    if (state.current_step < len(param.stepvalue)
            and state.iter >= param.stepvalue[state.current_step]):
        state.current_step += 1
        LOG.info("MultiStep Status: Iteration %d, step = %d", state.iter, state.current_step)
    return _f32(float(_f32(param.base_lr)) * _pow_double(param.gamma, state.current_step))


@register_lr_policy("poly", requires=("max_iter",))
def poly(param, state):
    frac = _f32(1) - _f32(state.iter) / _f32(param.max_iter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _f32(param.base_lr) * np.power(frac, _f32(param.power), dtype=_f32)


@register_lr_policy("sigmoid", requires=("stepsize", "gamma"))
def sigmoid(param, state):
    x = -_f32(param.gamma) * (_f32(state.iter) - _f32(param.stepsize))
    with np.errstate(over="ignore"):
        e = np.exp(_f32(x), dtype=_f32)
    return _f32(param.base_lr) * (_f32(1) / (_f32(1) + e))


def validate_lr_policy(param, where, iterations=None):
    """Raise a CaffeError (via `where(field, message)`) for a policy Caffe would reject.

    `iterations` is how many iterations will run (max_iter by default): with none, only the
    policy's name is checked, since Caffe reads its fields only to compute an iteration's
    rate (cvjena's test.solver runs poly with max_iter 0)."""
    name = param.lr_policy
    if name not in LR_POLICIES:
        known = ", ".join(sorted(LR_POLICIES))
        if not name:
            raise where("lr_policy", f"lr_policy is not set (known policies: {known})")
        raise where("lr_policy", f"Unknown learning rate policy: {name} (known policies: {known})")
    if (param.max_iter if iterations is None else iterations) <= 0:
        return
    req = REQUIRED.get(name, ())
    if "stepsize" in req and param.stepsize <= 0:
        raise where("stepsize" if param.HasField("stepsize") else "lr_policy",
                    f"lr_policy '{name}' needs stepsize > 0 (got {param.stepsize})")
    if "gamma" in req and param.gamma < 0:
        raise where("gamma", f"lr_policy '{name}' needs gamma >= 0 (got {param.gamma:g})")
    if "max_iter" in req and param.max_iter <= 0:
        raise where("max_iter" if param.HasField("max_iter") else "lr_policy",
                    f"lr_policy '{name}' needs max_iter > 0 (got {param.max_iter})")
    if name == "multistep":
        values = list(param.stepvalue)
        if not values:
            LOG.warning("lr_policy 'multistep' without stepvalue keeps base_lr throughout")
        if any(b <= a for a, b in zip(values, values[1:])):
            LOG.warning("stepvalue does not increase (%s): Caffe steps once per iteration "
                        "past each value in turn", values)
    if name in ("inv", "poly") and not param.HasField("power"):
        LOG.warning("lr_policy '%s' without power: power = 0 gives a constant rate", name)
