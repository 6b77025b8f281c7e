"""Solvers: update rules, learning-rate policies, regularizers and snapshots (Caffe's solvers).

    solver = get_solver("solver.prototxt")   # the rule named by `type`
    solver.solve()                           # or solver.step(n), solver.snapshot(), ...
"""
from .base import Solver
from .factory import SOLVERS, get_solver, register_solver
from .sgd import SGDSolver
from .nesterov import NesterovSolver
from .adagrad import AdaGradSolver
from .rmsprop import RMSPropSolver
from .adadelta import AdaDeltaSolver
from .adam import AdamSolver
from .lr_policy import LR_POLICIES, register_lr_policy
from .hooks import ParamHook, SolverParam, hook_factory
from .regularizers import REGULARIZERS, register_regularizer
from .signals import SignalHandler

__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "get_solver", "register_solver", "SOLVERS",
           "LR_POLICIES", "register_lr_policy", "REGULARIZERS", "register_regularizer",
           "ParamHook", "SolverParam", "hook_factory", "SignalHandler"]
