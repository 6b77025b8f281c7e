"""BatchNorm folding (caffe-jacinto's `caffe optimize`), as pure functions over a
NetParameter and the layers' arrays.

In TEST a BatchNorm, and a Scale after it, is a per-channel affine map y = a * x + c, so it
can move into the Convolution that feeds it. Per output channel o:

    s = gamma_o / sqrt(var_o + eps)          W_o <- W_o * s
    b_o <- (b_o - mean_o) * s + beta_o       (b_o = 0 for a conv without bias, which then
                                              gets one: bias_term true, constant 0 filler)
gamma, beta: the BatchNorm's own scale and bias when it has them, else those of a following
Scale layer (1 and 0 without one); with both, the Scale is folded too (s *= gamma_scale,
b <- b * gamma_scale + beta_scale).

The statistics are read exactly as layers/batch_norm.py computes its TEST output, for every
layout it loads (LAYOUTS there, picked by its detect_layout):
  bvlc          [mean * f, var * f, f]: mean = blob0 / f, var = blob1 / f (0 when f == 0);
                NVCaffe's 3-blob form [mean, var, 1] loads as this one
  nvcaffe-0.16  [mean, var, var_correction, scale, bias] (scale_bias): eps raised to at
                least 1e-5, stored statistics in TEST whatever use_global_stats says
  nvcaffe-0.15  [scale, bias, mean, var, counter]
eps is taken in the arrays' dtype, as the layer adds it. A BatchNorm that normalises with the
batch's own statistics in TEST (use_global_stats: false, bvlc and 0.15 forms) is no fixed
affine map and is left as it is, as is one whose variance + eps is not positive.

Which pairs fold, as caffe-jacinto 0.17 decides it: by the graph, not the order of the
list. A BatchNorm folds when its bottom is the top of a Convolution (one bottom, one top,
channel axis 1, no parameter shared by name, blobs [weight] or [weight, bias]) and that
BatchNorm is the only reader of that top; an in-place BatchNorm on the conv top is such a
reader. A Scale folds with it when the BatchNorm has no scale/bias of its own and a Scale
(one bottom, axis 1, num_axes 1) is the only reader of the BatchNorm's top. TI folds only
into Convolution and so do we: a BatchNorm after a Deconvolution, an InnerProduct, a Concat,
or a net input is left and reported.

The folded layers stay in the net as identities, as TI writes them: mean 0, variance
1 - eps (in the arrays' dtype, where var + eps is then exactly 1), scale 1, bias 0, Scale
gamma 1 and beta 0, moving-average factor 1; the layers then copy their input exactly. `remove=True` drops them instead; the conv then writes the blob the last dropped
layer wrote (its top is renamed), so the readers, in-place layers and net outputs keep
their names.

Where TI's versions differ (we follow 0.17's graph rule, with every layout): 0.15 and 0.16
pair layers by list order (layers[i + 1]) and also fold a BatchNorm *before* a Convolution
(bias += (beta - mean * s) * sum of the output channel's weights), which is only right when
the BN channel is the conv's output channel, so we do not; 0.16's conv-BN weight scaling
reads BN blob 3 (scale) even without scale_bias, when blob 3 does not exist; 0.15 and 0.16
also reset every quantization rounding_scheme to NEAREST, which is no part of folding.
"""
from collections import defaultdict, namedtuple

import numpy as np

from ..errors import CaffeError
from ..layers.batch_norm import LAYOUTS, detect_layout

#: One fold: layer names (scale None when no Scale was folded); `removed`: whether the
#: BatchNorm and Scale left the net.
Fold = namedtuple("Fold", "conv bn scale removed")
#: A BatchNorm left as it is, and why.
Left = namedtuple("Left", "bn reason")
#: The folded net (no blobs in its layers), {layer name: [arrays]}, the folds, the left ones.
FoldResult = namedtuple("FoldResult", "param blobs folds left")
#: How the BatchNorm layer computes its TEST output: the layout, the eps it adds, whether it
#: uses the stored statistics.
BnForm = namedtuple("BnForm", "layout eps global_stats")

# NVCaffe 0.17 raises eps to this (layers/batch_norm.py does the same for the 0.16 form)
NV_MIN_EPS = float(np.float32(1e-5))


class _Skip(Exception):
    """A BatchNorm that does not fold; the message is the reason."""


def bn_test_form(layer):
    """The BnForm of a BatchNorm LayerParameter in TEST, as layers/batch_norm.py sets it up."""
    bn = layer.batch_norm_param
    layout = detect_layout(layer)
    if layout == "nvcaffe-0.16":
        return BnForm(layout, max(bn.eps, NV_MIN_EPS), True)
    global_stats = bn.use_global_stats if bn.HasField("use_global_stats") else True
    return BnForm(layout, bn.eps, global_stats)


def bn_affine(form, arrays):
    """(a, c), float64 per channel, with the TEST output y = a * x + c."""
    named = _named(form, arrays)
    eps = np.float64(named["mean"].dtype.type(form.eps))
    stats = {k: np.asarray(v, np.float64).reshape(-1) for k, v in named.items()}
    mean, var = stats["mean"], stats["variance"]
    if form.layout == "bvlc":
        f = stats["moving_average_factor"][0]
        k = 0.0 if f == 0 else 1.0 / f
        mean, var = mean * k, var * k
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_std = 1.0 / np.sqrt(var + eps)
    a = stats.get("scale", 1.0) * inv_std
    return a, stats.get("bias", 0.0) - mean * a


def scale_affine(layer, arrays):
    """(gamma, beta), float64 per channel, of a one-bottom Scale layer."""
    gamma = np.asarray(arrays[0], np.float64).reshape(-1)
    beta = (np.asarray(arrays[1], np.float64).reshape(-1) if layer.scale_param.bias_term
            else np.zeros_like(gamma))
    return gamma, beta


def fold_into_conv(weight, bias, a, c):
    """Weight and bias of conv followed by y = a * x + c, in the weight's dtype."""
    per_out = a.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = np.zeros(a.shape) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    return ((np.asarray(weight, np.float64) * per_out).astype(weight.dtype),
            (b * a + c).astype(weight.dtype))


def identity_variance(eps, dtype):
    """TI's 1 - eps, in `dtype`. The layer's var + eps is then exactly 1, so the identity is
    exact: 1 - e is exact for e >= 1/2, and for smaller e it is off by at most half an ulp of
    numbers below 1, which adding e back rounds (to even) onto 1."""
    t = np.dtype(dtype).type
    return t(1) - t(eps)


def identity_bn(form, arrays):
    """New BatchNorm arrays that make it the identity in TEST (counter, correction kept)."""
    out = [np.array(x, copy=True) for x in arrays]
    named = dict(zip(LAYOUTS[form.layout], out))
    named["mean"][...] = 0
    named["variance"][...] = identity_variance(form.eps, named["variance"].dtype)
    for key, value in (("moving_average_factor", 1), ("scale", 1), ("bias", 0)):
        if key in named:
            named[key][...] = value
    return out


def identity_scale(arrays):
    return [np.ones_like(arrays[0])] + [np.zeros_like(x) for x in arrays[1:]]


def wiring(layers):
    """Caffe's blob graph with in-place layers: each (layer, top) index pair is one version
    of a blob. Returns (feeds, readers): feeds[(i, k)] is the version bottom k of layer i
    reads (None: a net input no layer writes), readers[version] the (i, k) that read it."""
    latest, feeds, readers = {}, {}, defaultdict(list)
    for i, layer in enumerate(layers):
        for k, name in enumerate(layer.bottom):
            feeds[(i, k)] = version = latest.get(name)
            if version is not None:
                readers[version].append((i, k))
        for t, name in enumerate(layer.top):
            latest[name] = (i, t)
    return feeds, readers


def _shared_names(layers):
    """ParamSpec names given by more than one layer: those blobs are shared."""
    count = defaultdict(int)
    for layer in layers:
        for name in {spec.name for spec in layer.param if spec.name}:
            count[name] += 1
    return {name for name, n in count.items() if n > 1}


def _named(form, arrays):
    names = LAYOUTS[form.layout]
    if len(arrays) != len(names):
        raise CaffeError(f"{len(arrays)} blobs for a BatchNorm in the {form.layout} layout "
                         f"({', '.join(names)})")
    return dict(zip(names, (np.asarray(x) for x in arrays)))


def _arrays(blobs, layer):
    try:
        return blobs[layer.name]
    except KeyError:
        raise CaffeError(f"no blobs given for {layer.type} '{layer.name}'") from None


class _Folder:
    """One pass over the net; the results go to self.chains, self.left, self.blobs."""

    def __init__(self, param, blobs):
        self.layers = param.layer
        self.blobs = dict(blobs)
        self.feeds, self.readers = wiring(self.layers)
        self.shared = _shared_names(self.layers)
        self.chains = []     # (conv index, bn index, scale index or None)
        self.left = []

    def run(self):
        for i, layer in enumerate(self.layers):
            if layer.type != "BatchNorm":
                continue
            try:
                self._fold(i)
            except _Skip as skip:
                self.left.append(Left(layer.name, str(skip)))
            except CaffeError as err:
                raise CaffeError(f"layer '{layer.name}' (BatchNorm): {err.bare_message}") \
                    from None

    def _only_reader(self, version, i):
        return self.readers.get(version, []) == [(i, 0)]

    def _check_unshared(self, layer):
        if any(spec.name in self.shared for spec in layer.param if spec.name):
            raise _Skip(f"{layer.type} '{layer.name}' shares its parameters with another "
                        f"layer")

    def _conv_of(self, i):
        bn = self.layers[i]
        if len(bn.bottom) != 1:
            raise _Skip("it does not have exactly one bottom")
        source = self.feeds[(i, 0)]
        if source is None or self.layers[source[0]].type == "Input":
            raise _Skip(f"its bottom '{bn.bottom[0]}' is a net input")
        conv = self.layers[source[0]]
        if conv.type != "Convolution":
            raise _Skip(f"it follows {conv.type} '{conv.name}' (only a Convolution is folded, "
                        f"as in caffe-jacinto)")
        if len(conv.bottom) != 1 or len(conv.top) != 1:
            raise _Skip(f"Convolution '{conv.name}' has several bottoms and tops")
        if not self._only_reader(source, i):
            raise _Skip(f"the top '{conv.top[0]}' of Convolution '{conv.name}' is read by "
                        f"other layers too")
        if conv.convolution_param.axis != 1:
            raise _Skip(f"Convolution '{conv.name}' has channel axis "
                        f"{conv.convolution_param.axis}, not 1")
        self._check_unshared(conv)
        self._check_unshared(bn)
        return source[0]

    def _scale_of(self, i, form, channels, ndim):
        """The index of a Scale to fold with BatchNorm i, or None."""
        if "scale" in LAYOUTS[form.layout]:
            return None
        readers = self.readers.get((i, 0), [])
        if len(readers) != 1:
            return None
        j = readers[0][0]
        scale = self.layers[j]
        p = scale.scale_param
        if scale.type != "Scale" or len(scale.bottom) != 1 or p.num_axes != 1 or \
                p.axis not in (1, 1 - ndim):
            return None
        if any(spec.name in self.shared for spec in scale.param if spec.name):
            return None
        arrays = _arrays(self.blobs, scale)
        if any(np.asarray(x).size != channels for x in arrays):
            return None
        return j

    def _fold(self, i):
        bn = self.layers[i]
        ci = self._conv_of(i)
        conv = self.layers[ci]
        form = bn_test_form(bn)
        if not form.global_stats:
            raise _Skip("it normalises with the batch's statistics in TEST "
                        "(use_global_stats: false)")
        conv_arrays = _arrays(self.blobs, conv)
        bias_term = conv.convolution_param.bias_term
        if len(conv_arrays) != 1 + bias_term:
            raise _Skip(f"Convolution '{conv.name}' has {len(conv_arrays)} blobs, not "
                        f"weight{' and bias' if bias_term else ''}")
        weight = np.asarray(conv_arrays[0])
        bn_arrays = _arrays(self.blobs, bn)
        a, c = bn_affine(form, bn_arrays)
        if a.shape != (weight.shape[0],):
            raise CaffeError(f"{a.size} channels, Convolution '{conv.name}' has "
                             f"{weight.shape[0]} outputs")
        if not (np.isfinite(a).all() and np.isfinite(c).all()):
            raise _Skip("its variance + eps is not positive in some channel")
        sj = self._scale_of(i, form, a.size, weight.ndim)
        if sj is not None:
            scale = self.layers[sj]
            scale_arrays = _arrays(self.blobs, scale)
            gamma, beta = scale_affine(scale, scale_arrays)
            a, c = a * gamma, c * gamma + beta
            self.blobs[scale.name] = identity_scale(scale_arrays)
        bias = conv_arrays[1] if bias_term else None
        self.blobs[conv.name] = list(fold_into_conv(weight, bias, a, c))
        self.blobs[bn.name] = identity_bn(form, bn_arrays)
        self.chains.append((ci, i, sj))


def _remove(param, folder):
    """Drop the folded layers; each conv's top takes the name of the last dropped top.

    In a Caffe net a name is written again only in place, so that name is either the conv
    top itself (an in-place chain) or first written by the chain; the conv top had no other
    reader. Every reader, in-place layers and net outputs keep their blob names."""
    removed = set()
    for ci, bi, sj in folder.chains:
        last = bi if sj is None else sj
        param.layer[ci].top[0] = folder.layers[last].top[0]
        removed.update(k for k in (bi, sj) if k is not None)
    for i in sorted(removed, reverse=True):
        del param.layer[i]
        folder.blobs.pop(folder.layers[i].name, None)


def fold_batch_norm(param, blobs, remove=False):
    """Fold every foldable BatchNorm (and Scale) of `param` into its Convolution.

    `param`: a NetParameter of one phase (filtered, as a Net is built from it); `blobs`:
    {layer name: [arrays]} for the layers with parameters. Nothing given is changed. Returns
    a FoldResult: a new NetParameter (the convs that got a bias say so, no layer carries
    blobs), new {name: [arrays]} (untouched layers share the given arrays), the folds in net
    order and the BatchNorm layers left as they were.
    """
    folder = _Folder(param, blobs)
    folder.run()
    out = type(param)()
    out.CopyFrom(param)
    for layer in out.layer:
        del layer.blobs[:]
    for ci, _, _ in folder.chains:
        conv = out.layer[ci].convolution_param
        if not conv.bias_term:
            conv.bias_term = True
            conv.bias_filler.Clear()
            conv.bias_filler.type = "constant"
            conv.bias_filler.value = 0
    if remove:
        _remove(out, folder)
    names = [layer.name for layer in param.layer]
    folds = [Fold(names[ci], names[bi], None if sj is None else names[sj], remove)
             for ci, bi, sj in folder.chains]
    return FoldResult(out, folder.blobs, folds, folder.left)
