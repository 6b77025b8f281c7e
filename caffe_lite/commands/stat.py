"""`caffe-lite stat`: per layer, what a (structured-)sparse model costs (SSL, #11).

    caffe-lite stat -model M [-weights W] [-strict]

Builds the net in TEST (its data layers must open, or give it a deploy net), loads the
weights when given (else the fillers') and prints, for every Convolution and InnerProduct:
its weight shape (DNS layers: the weights times their masks, as they run); per image the
dense multiply-accumulates, those left once the all-zero rows
and columns of each group are removed (what LOWERED_CCNMM runs) and the non-zero ones (the
bound of an element-sparse kernel); parameters and non-zeros; and SSL's four sparsities
(element |w| < 1e-4, column, row, block for the layer's first block_group_lasso spec); the
kept fraction (non-zero weights) and whether every weight is 0 or +-2^k, with the distinct
exponents k (INQ). Then the totals, the speed-up that removing rows and columns allows
(dense / lean MACs), the weights kept, and the bytes the model takes stored sparse
(compress/stored_size.py) against float32.
The table goes to stdout; log lines to stderr as usual.
"""
from ..cli import Flag, command, parse_flags, unexpected_argument
from ..common import TEST
from ..compress.structure_stat import layer_stat
from ..errors import CaffeError
from .netflags import STRICT_FLAG, strict_fork_fields

FLAGS = [
    Flag("model", "", str, "The model definition protocol buffer text file."),
    Flag("weights", "", str, "Optional: the trained weights (caffemodel)."),
    STRICT_FLAG,
]
# SSL intel's fused layers count as the convolution or inner product they start with; the
# DNS and INQ layers as theirs, with the weights they run (DNS: weights x masks)
CONVS = ("Convolution", "ConvolutionReLU", "ConvolutionReLUPool", "ConvolutionReLUPoolLRN",
         "CConvolution", "DNSConvolution", "INQConvolution")
IPS = ("InnerProduct", "InnerProductReLUDropout", "CInnerProduct", "DNSInnerProduct",
       "INQInnerProduct")
COLUMNS = ("layer", "shape", "MACs", "MACs lean", "MACs nnz", "params", "nnz", "kept%",
           "elem%", "col%", "row%", "block%", "powers of two")


@command("stat", "per-layer MACs, parameters and structured sparsity of a model (SSL)",
         "-model MODEL [-weights WEIGHTS]")
def stat(argv):
    values, positional = parse_flags(argv, FLAGS)
    if positional:
        raise unexpected_argument(positional, 0)
    if not values["model"]:
        raise CaffeError("Need a model definition to stat (-model).")
    with strict_fork_fields(values["strict"]):
        from ..net import Net
        net = Net(values["model"], phase=TEST)
        if values["weights"]:
            net.copy_from(values["weights"])
    rows = net_stats(net)
    if not rows:
        raise CaffeError("the net has no Convolution or InnerProduct layer", values["model"])
    print(format_table(rows))
    return 0


def net_stats(net):
    """[(layer name, LayerStat)] of the net's Convolution and InnerProduct layers, in order
    (a weight shared by several layers is counted for each: each runs its MACs)."""
    out = []
    for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        if layer.type not in CONVS + IPS or not layer.blobs:
            continue
        w = _running_weight(layer)
        if layer.type in CONVS:
            group = layer.param.convolution_param.group or 1
            top = _conv_top(layer, net.top_vecs[i][0].shape)
            pixels = int(top[-1] * top[-2]) if len(top) >= 4 else int(top[-1])
        else:
            group, pixels = 1, _ip_rows(layer, net.top_vecs[i][0].shape)
        block = None
        specs = layer.param.param[0].block_group_lasso if len(layer.param.param) else ()
        if len(specs):
            block = (specs[0].ydimen, specs[0].xdimen)
        out.append((name, layer_stat(w, pixels, group, block, _bias(layer))))
    return out


def _running_weight(layer):
    """The weight forward uses: a DNS layer's masked weight, else blob 0."""
    effective = getattr(layer, "effective_weight", None)
    return effective() if effective is not None else layer.blobs[0].data


def _bias(layer):
    effective = getattr(layer, "effective_bias", None)
    bias = effective() if effective is not None else None
    return 0 if bias is None else bias.size


def _conv_top(layer, top_shape):
    """The convolution's own output shape: a fused layer's top may be pooled after it; its
    first link blob is the convolution's output (layers/fused.py)."""
    links = getattr(layer, "links", None)
    return links[0][0].shape if links and links[0] else top_shape


def _ip_rows(layer, top_shape):
    """Output positions per image of an InnerProduct: 1 unless its axis leaves more."""
    axis = layer.param.inner_product_param.axis % len(top_shape)
    n = 1
    for d in top_shape[1:axis]:
        n *= int(d)
    return n


def _percent(v):
    return "-" if v is None else f"{v:.2f}"


def _powers(exps):
    """'no', or 'yes: 2^a..2^b (n)' with the distinct exponents."""
    if exps is None:
        return "no"
    if not exps:
        return "all zero"
    return f"yes: {','.join(str(e) for e in exps)}"


def format_table(rows):
    lines = [COLUMNS]
    total = dict(macs=0, lean=0, nnz_macs=0, params=0, nnz=0, stored=0, bias=0)
    for name, s in rows:
        lines.append((name, "x".join(str(d) for d in s.shape), f"{s.macs:,}",
                      f"{s.macs_lean:,}", f"{s.macs_nnz:,}", f"{s.params:,}",
                      f"{s.params_nnz:,}", _percent(100.0 * s.params_nnz / s.params),
                      _percent(s.element), _percent(s.column), _percent(s.row),
                      _percent(s.block), _powers(s.powers)))
        total["stored"] += s.stored_bits
        total["bias"] += s.bias
        total["macs"] += s.macs
        total["lean"] += s.macs_lean
        total["nnz_macs"] += s.macs_nnz
        total["params"] += s.params
        total["nnz"] += s.params_nnz
    # the element percentage of all weights, |w| < 1e-4 as per layer
    zero = (sum(s.element * s.params for _, s in rows) / total["params"]
            if total["params"] else 0.0)
    kept = 100.0 * total["nnz"] / total["params"] if total["params"] else 0.0
    lines.append(("total", "", f"{total['macs']:,}", f"{total['lean']:,}",
                  f"{total['nnz_macs']:,}", f"{total['params']:,}", f"{total['nnz']:,}",
                  f"{kept:.2f}", f"{zero:.2f}", "", "", "", ""))
    widths = [max(len(r[k]) for r in lines) for k in range(len(COLUMNS))]
    text = ["  ".join(c.ljust(w) if k < 2 else c.rjust(w)
                      for k, (c, w) in enumerate(zip(r, widths))).rstrip() for r in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    lean = total["lean"]
    speedup = f"{total['macs'] / lean:.2f}x" if lean else "inf"
    text.append("")
    text.append(f"MACs per image: dense {total['macs']:,}; with the all-zero rows and columns "
                f"removed {lean:,} ({speedup} fewer); non-zero weights only "
                f"{total['nnz_macs']:,}")
    dense_bytes = 4 * (total["params"] + total["bias"])
    stored_bytes = (total["stored"] + 7) // 8 + 4 * total["bias"]
    ratio = f"{dense_bytes / stored_bytes:.1f}x" if stored_bytes else "inf"
    text.append(f"Parameters kept: {total['nnz']:,} of {total['params']:,} weights "
                f"({kept:.2f}%, {total['params'] / total['nnz']:.1f}x fewer)" if total["nnz"]
                else "Parameters kept: none")
    text.append(f"Stored: {stored_bytes:,} bytes sparse (4-bit relative indices; 4-bit codes "
                f"where a layer is all 0 / +-2^k, else float32; biases float32) against "
                f"{dense_bytes:,} bytes float32 ({ratio} smaller)")
    return "\n".join(text)
