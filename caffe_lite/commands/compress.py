"""`caffe-lite compress SUBCOMMAND`: DeePhi / Xilinx `deephi_compress`'s channel pruning (#13).

    caffe-lite compress ana -config config.prototxt
    caffe-lite compress compress -config config.prototxt
    caffe-lite compress finetune -config config.prototxt
    caffe-lite compress transform -model train_val.prototxt -weights W [-output DIR]
    caffe-lite compress stat -model M [-weights W]
    (`caffe-lite deephi_compress ...` is the same command, under the tool's own name)

The config is DeePhi's (compress/deephi_config.py has what each subcommand needs):
  ana        the sensitivity analysis of the model (compress/deephi_flow.py), once per
             model: <workspace>/ana.regular; a progress bar on a terminal
  compress   prunes whole output channels until the operations are at most (1 - rate) of
             the full model's, with per-group ratios from the analysis; writes
             <workspace>/regular_rate_<rate>/sparse.caffemodel (the masked model, same
             prototxt), prints the summary table and the command to fine-tune
  finetune   the config's solver on the config's model from sparse.caffemodel, the pruned
             channels held at 0; snapshots <workspace>/regular_rate_<rate>/snapshots/_iter_N
  transform  removes the pruned channels (all-zero filters) for real: final.prototxt and
             transformed.caffemodel in -output (default: the folder above the weights'
             snapshots/ folder, where compress left sparse.caffemodel, else the weights'
             folder)
  stat       per-layer operations and parameters in DeePhi's counting
             (compress/deephi_stat.py), the totals, then the full count with the fully
             connected layers; with -weights, of the model without its all-zero channels
`gpu` (config or -gpu) is accepted and the CPU is used, with one warning.
"""
import os
import sys

from google.protobuf import text_format

from ..cli import Flag, command, parse_flags, unexpected_argument
from ..errors import CaffeError
from ..io.atomic import atomic_write
from ..io.binary import write_binary
from ..io.blobs import array_to_blob_proto
from ..log import LOG
from .netflags import STRICT_FLAG, strict_fork_fields, warn_gpu

SUBCOMMANDS = ("ana", "compress", "finetune", "transform", "stat")
SPARSE_MODEL = "sparse.caffemodel"
FINAL_MODEL, FINAL_WEIGHTS = "final.prototxt", "transformed.caffemodel"

FLAGS = [
    Flag("config", "", str, "The DeePhi prune config (ana, compress, finetune)."),
    Flag("model", "", str, "The model definition (transform, stat)."),
    Flag("weights", "", str, "The weights: the fine-tuned snapshot (transform); optional "
                             "for stat."),
    Flag("output", "", str, "transform: the folder for final.prototxt and "
                            "transformed.caffemodel (default: beside sparse.caffemodel)."),
    Flag("gpu", "", str, "Accepted for compatibility; caffe-lite runs on the CPU."),
    STRICT_FLAG,
]
USAGE = "ana|compress|finetune -config CONFIG | transform -model M -weights W | stat -model M"
HELP = "DeePhi's channel pruning: ana, compress, finetune, transform, stat (deephi_compress)"


@command("compress", HELP, USAGE)
def compress_command(argv):
    values, positional = parse_flags(argv, FLAGS)
    if not positional:
        raise CaffeError(f"which subcommand? ({', '.join(SUBCOMMANDS)}): "
                         "caffe-lite compress ana -config config.prototxt")
    sub = positional[0]
    if sub not in SUBCOMMANDS:
        raise CaffeError(f"unknown subcommand '{sub}' (subcommands: {', '.join(SUBCOMMANDS)})")
    if len(positional) > 1:
        raise unexpected_argument(positional, 1)
    with strict_fork_fields(values["strict"]):
        return RUN[sub](values)


command("deephi_compress", HELP + "; the same as compress", USAGE)(compress_command)


# --- config subcommands ---------------------------------------------------------------------

def _config(values, sub):
    from ..compress.deephi_config import load_config
    if not values["config"]:
        raise CaffeError(f"Need a DeePhi prune config (-config) for {sub}.")
    for flag in ("model", "weights", "output"):
        if values[flag]:
            raise CaffeError(f"-{flag} is not a flag of {sub}: the config gives it")
    config = load_config(values["config"], sub)
    if values["gpu"]:
        warn_gpu(values["gpu"])
    else:
        warn_gpu(config.gpu, f"{config.path}: gpu")
    LOG.info("Use CPU.")
    return config


def _model(config, weights):
    from ..compress.deephi_flow import PrunedModel, check_acc_name
    model = PrunedModel(config.model, weights)
    check_acc_name(model, config.acc_name, config)
    if not model.graph.prunable:
        raise CaffeError("the net has no convolution whose channels can be pruned",
                         config.model)
    for group in model.graph.groups:
        if group.fixed:
            LOG.info("Not pruned: %s (%s)", ", ".join(group.producers), group.fixed)
    return model


def _evaluator(model, config, bar=None):
    from ..compress.deephi_flow import Evaluator
    return Evaluator(model.net, config.acc_name, config.test_iter,
                     None if bar is None else bar.tick)


def ana(values):
    from ..compress.channel_prune import ANA_RATIOS
    from ..compress.deephi_flow import analyse, save_analysis
    from ..solvers.progress import ProgressBar
    config = _config(values, "ana")
    model = _model(config, config.weights)
    groups = model.graph.prunable
    total = config.test_iter * (1 + len(groups) * len(ANA_RATIOS))
    LOG.info("Sensitivity analysis of %s (%s): %d groups x %d ratios, %d test batches each",
             config.model, config.weights, len(groups), len(ANA_RATIOS), config.test_iter)

    def report(group, ratio, accuracy):
        if group is None:
            LOG.info("ana: baseline %s = %.4f", config.acc_name, accuracy)
        else:
            LOG.info("ana: %s ratio %.1f (%d of %d channels): %s = %.4f",
                     "+".join(group.producers), ratio, int(ratio * group.size + 1e-9),
                     group.size, config.acc_name, accuracy)

    with ProgressBar.simple(total, sys.stderr, "ana") as bar:
        record = analyse(model, _evaluator(model, config, bar), report=report)
    record.update(model=config.model, weights=config.weights, acc_name=config.acc_name,
                  test_iter=config.test_iter)
    path = save_analysis(config.workspace, record)
    LOG.info("Analysis written to %s", path)
    return 0


def compress(values):
    from ..compress import channel_prune
    from ..compress.deephi_flow import load_analysis, plan
    config = _config(values, "compress")
    model = _model(config, config.weights)
    record, ana_base, ratios, accuracies = load_analysis(config.workspace, model.graph,
                                                         values["config"])
    if record.get("weights") != config.weights:
        LOG.info("Using the analysis of %s (made with %s) for %s", record.get("model"),
                 record.get("weights"), config.weights)
    params = model.params()
    evaluator = _evaluator(model, config)
    base_acc = evaluator.accuracy()
    graph = model.graph
    pruned = channel_prune.pruned_channels(graph, params)
    base_kept = {root: int((~p).sum()) for root, p in pruned.items()}
    keep, kept = plan(model, params, ana_base, ratios, accuracies, config.rate)
    sparse = channel_prune.masked(graph, params, keep)
    model.set_params(sparse)
    acc = evaluator.accuracy()
    folder = config.rate_folder
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, SPARSE_MODEL)
    LOG.info("Writing the compressed model to %s", out)
    model.net.save(out)
    for group in graph.prunable:
        LOG.info("%s: %d -> %d channels", "+".join(group.producers), group.size,
                 kept[group.space])
    full = model.totals()
    print(summary_table(base_acc, acc, model.totals(base_kept), model.totals(kept), full,
                        config.rate, folder))
    print(f"\nFine-tune the compressed model with:\n  caffe-lite compress finetune -config "
          f"{values['config']}")
    return 0


def summary_table(base_acc, acc, base, compressed, full, rate, folder):
    """The tutorial's table (Accuracy, Weights, Operations; Baseline, Compressed, Delta),
    DeePhi's counting, then the reduction against the full model."""
    def change(new, old):
        return f"{100.0 * (new - old) / old:+.2f}%" if old else "n/a"

    rows = [("", "Accuracy", "Weights", "Operations"),
            ("Baseline", f"{base_acc:.4f}", f"{base.params:,}", f"{base.operations:,}"),
            ("Compressed", f"{acc:.4f}", f"{compressed.params:,}",
             f"{compressed.operations:,}"),
            ("Delta", f"{acc - base_acc:+.4f}", change(compressed.params, base.params),
             change(compressed.operations, base.operations))]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = [f"Compression summary ({folder}, rate {rate:g}; DeePhi's counting: Convolution "
             "operations, Convolution + BatchNorm + Scale weights)"]
    lines += ["  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                        for k, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.append(f"Against the full model: operations "
                 f"{change(compressed.operations, full.operations)}, weights "
                 f"{change(compressed.params, full.params)}; with the fully "
                 f"connected layers: operations "
                 f"{change(compressed.full_operations, full.full_operations)}, weights "
                 f"{change(compressed.full_params, full.full_params)}")
    return "\n".join(lines)


def finetune(values):
    from ..compress import channel_prune
    from ..compress.deephi_finetune import HoldPrunedChannels
    from ..compress.deephi_flow import PrunedModel
    from ..io.prototxt import read_solver_param
    from ..solvers.factory import get_solver
    from ..solvers.progress import ProgressBar
    from ..solvers.signals import SignalHandler
    config = _config(values, "finetune")
    folder = config.rate_folder
    sparse = os.path.join(folder, SPARSE_MODEL)
    if not os.path.isfile(sparse):
        raise CaffeError(f"no compressed model {sparse}: run `caffe-lite compress compress "
                         f"-config {values['config']}` first")
    model = PrunedModel(config.model, sparse)
    keep = {root: ~p for root, p in
            channel_prune.pruned_channels(model.graph, model.params()).items()}
    removals = channel_prune.removals(model.graph, keep)
    param = read_solver_param(config.solver)
    for name in ("train_net", "train_net_param", "net_param"):
        param.ClearField(name)
    param.net = config.model
    snapshots = os.path.join(folder, "snapshots")
    os.makedirs(snapshots, exist_ok=True)
    param.snapshot_prefix = snapshots + os.sep
    param.ClearField("weights")
    LOG.info("Fine-tuning %s from %s (%d pruned channels held at 0), snapshots in %s",
             config.model, sparse, sum(int((~k).sum()) for k in keep.values()), snapshots)
    del model
    with SignalHandler() as handler:
        solver = get_solver(param, path=config.solver)
        solver.set_action_function(handler.get_action)
        solver.load_weights(sparse)
        solver.add_hook(HoldPrunedChannels(removals))
        with ProgressBar.for_solver(solver, sys.stderr):
            LOG.info("Starting Optimization")
            solver.solve()
    LOG.info("Optimization Done.")
    LOG.info("Fine-tuned model: %s_iter_%d.caffemodel", param.snapshot_prefix, solver.iter)
    return 0


# --- model subcommands ----------------------------------------------------------------------

def _model_flags(values, sub, need_weights):
    if values["config"]:
        raise CaffeError(f"{sub} takes -model and -weights, not -config")
    if not values["model"]:
        raise CaffeError(f"Need a model definition for {sub} (-model).")
    if need_weights and not values["weights"]:
        raise CaffeError(f"Need the fine-tuned weights for {sub} (-weights).")
    warn_gpu(values["gpu"])


def transform(values):
    from ..compress import channel_prune
    from ..compress.deephi_flow import PrunedModel
    _model_flags(values, "transform", True)
    output = values["output"] or default_output(values["weights"])
    if not os.path.isdir(output):
        raise CaffeError("-output: no such folder", output)
    model = PrunedModel(values["model"], values["weights"])
    params = model.params()
    pruned = channel_prune.pruned_channels(model.graph, params)
    keep = {root: ~p for root, p in pruned.items()}
    final, arrays = channel_prune.transformed(model.graph, model.param, params, keep)
    for group in model.graph.prunable:
        LOG.info("%s: %d -> %d channels", "+".join(group.producers), group.size,
                 int(keep[group.space].sum()))
    model_path = os.path.join(output, FINAL_MODEL)
    weights_path = os.path.join(output, FINAL_WEIGHTS)
    weights = type(final)()
    weights.CopyFrom(final)
    done = set()
    for lp in weights.layer:
        if lp.name in arrays and lp.name not in done:
            done.add(lp.name)
            for array in arrays[lp.name]:
                array_to_blob_proto(array, out=lp.blobs.add())
    LOG.info("Writing the transformed prototxt to %s", model_path)
    atomic_write(model_path, text_format.MessageToString(final).encode("utf-8"))
    LOG.info("Writing the transformed caffemodel to %s", weights_path)
    write_binary(weights_path, weights)
    kept = channel_prune.kept_counts(keep)
    full, now = model.totals(), model.totals(kept)
    print(f"Transformed: operations {full.operations:,} -> {now.operations:,}, weights "
          f"{full.params:,} -> {now.params:,} (DeePhi's counting); with the fully connected "
          f"layers: operations {full.full_operations:,} -> {now.full_operations:,}, weights "
          f"{full.full_params:,} -> {now.full_params:,}")
    return 0


def default_output(weights):
    folder = os.path.dirname(os.path.abspath(weights))
    if os.path.basename(folder) == "snapshots":
        return os.path.dirname(folder)
    return folder


def stat(values):
    from ..compress import channel_prune
    from ..compress.deephi_flow import PrunedModel
    _model_flags(values, "stat", False)
    model = PrunedModel(values["model"], values["weights"] or None)
    kept = None
    if values["weights"]:
        pruned = channel_prune.pruned_channels(model.graph, model.params())
        kept = {root: int((~p).sum()) for root, p in pruned.items()}
    print(stat_table(model.costs(kept), model.totals(kept),
                     model.totals() if kept else None))
    return 0


def stat_table(rows, totals, full=None):
    """Per layer and the totals; `full`: the totals of the unpruned prototxt."""
    from ..compress.deephi_stat import DEEPHI_OP_TYPES, DEEPHI_PARAM_TYPES
    head = ("layer", "type", "output", "operations", "parameters", "counted by DeePhi")
    lines = [head]
    for r in rows:
        counted = [w for w, ok in (("operations", r.type in DEEPHI_OP_TYPES),
                                   ("parameters", r.type in DEEPHI_PARAM_TYPES)) if ok]
        lines.append((r.layer, r.type, r.output, f"{r.operations:,}", f"{r.params:,}",
                      " + ".join(counted) or "no (full count only)"))
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    text = ["  ".join(c.rjust(w) if k in (3, 4) else c.ljust(w)
                      for k, (c, w) in enumerate(zip(line, widths))).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    text.append("")
    text.append(f"DeePhi's count: operations {totals.operations:,}, parameters "
                f"{totals.params:,} (Convolution operations = outputs x (2 x kernel volume "
                f"+ 1); Convolution, BatchNorm and Scale parameters)")
    text.append(f"Full count, with the fully connected layers: operations "
                f"{totals.full_operations:,}, parameters {totals.full_params:,}")
    if full is not None:
        def pct(a, b):
            return f"{100.0 * (a - b) / b:+.2f}%" if b else "n/a"
        text.append(f"Against the full model (all channels): operations "
                    f"{pct(totals.operations, full.operations)}, parameters "
                    f"{pct(totals.params, full.params)}; full count: operations "
                    f"{pct(totals.full_operations, full.full_operations)}, parameters "
                    f"{pct(totals.full_params, full.full_params)}")
    return "\n".join(text)


RUN = {"ana": ana, "compress": compress, "finetune": finetune, "transform": transform,
       "stat": stat}
