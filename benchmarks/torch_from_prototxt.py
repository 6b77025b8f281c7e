"""A torch.nn model equivalent to a Caffe NetParameter, for speed comparisons.

    from benchmarks.torch_from_prototxt import TorchNet, make_optimizer
    model = TorchNet(net_param)           # a NetParameter already filtered to one phase
    loss, blobs = model({"data": x, "label": y})

Layer types: Input (its tops are the inputs), Convolution (group, pad, stride, dilation),
Pooling MAX / AVE (Caffe's ceil mode and its padded AVE divisor; global_pooling), ReLU
(negative_slope), InnerProduct (axis), BatchNorm (BVLC: affine-free; NVCaffe `scale_bias`:
affine), Scale (bias_term; folded into the BatchNorm just before it, as a PyTorch user
writes BatchNorm2d(affine=True)), Bias, Dropout, Eltwise (SUM with coeff, PROD, MAX), Concat,
LRN (ACROSS_CHANNELS, WITHIN_CHANNEL), Flatten, Softmax, SoftmaxWithLoss (ignore_label,
VALID normalization) and Accuracy (top_k; no gradient). Anything else raises ValueError.

Blobs are looked up by name in a dict as the layers run in prototxt order; a Caffe layer that
computes in place rebinds its name (ReLU then runs in place in torch too). Parameters use
torch's default initialisation: the model is for timing, not for parity of values.
`make_optimizer` builds torch.optim.SGD with Caffe's lr_mult / decay_mult per parameter.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _pair(p, name, default):
    """(h, w) of a ConvolutionParameter's kernel / pad / stride / dilation: the _h/_w fields,
    else the repeated field (one value, or one per spatial axis)."""
    if name != "dilation" and p.HasField(f"{name}_h"):
        return (getattr(p, f"{name}_h"), getattr(p, f"{name}_w"))
    field = getattr(p, "kernel_size" if name == "kernel" else name)
    if len(field) == 0:
        return (default, default)
    return (field[0], field[-1])


def _module_name(name):
    return name.replace("/", "_").replace(".", "_") or "unnamed"


class _Scale(nn.Module):
    def __init__(self, channels, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x * self.weight.view(shape)
        return y + self.bias.view(shape) if self.bias is not None else y


class _Bias(nn.Module):
    def __init__(self, channels, value, learn):
        super().__init__()
        self.bias = nn.Parameter(torch.full((channels,), float(value)), requires_grad=learn)

    def forward(self, x):
        return x + self.bias.view((1, -1) + (1,) * (x.dim() - 2))


class TorchNet(nn.Module):
    """The net; `forward(inputs)` returns (weighted loss sum, dict of blobs)."""

    def __init__(self, net_param, input_shapes=None):
        super().__init__()
        self.steps = []              # (type, bottoms, tops, module key or None, extra)
        self.mods = nn.ModuleDict()
        self.lr_mults = {}           # parameter name -> (lr_mult, decay_mult)
        shapes = dict(input_shapes or {})
        layers = list(net_param.layer)
        for i, lp in enumerate(layers):
            if lp.type == "Input":
                for j, top in enumerate(lp.top):
                    dims = lp.input_param.shape[j if len(lp.input_param.shape) > 1 else 0].dim
                    shapes.setdefault(top, tuple(dims))
        folded = set()
        for i, lp in enumerate(layers):
            if lp.name in folded:
                continue
            bottoms, tops = list(lp.bottom), list(lp.top)
            key = _module_name(lp.name)
            extra = None
            t = lp.type
            in_shape = shapes.get(bottoms[0]) if bottoms else None
            if t == "Input":
                self.steps.append((t, bottoms, tops, None, None))
                continue
            if t == "Convolution":
                p = lp.convolution_param
                kernel = _pair(p, "kernel", 1)
                mod = nn.Conv2d(in_shape[1], p.num_output, kernel,
                                stride=_pair(p, "stride", 1), padding=_pair(p, "pad", 0),
                                dilation=_pair(p, "dilation", 1), groups=p.group,
                                bias=p.bias_term)
                out = self._conv_out(in_shape, p.num_output, kernel, _pair(p, "stride", 1),
                                     _pair(p, "pad", 0), _pair(p, "dilation", 1))
            elif t == "InnerProduct":
                p = lp.inner_product_param
                axis = p.axis % len(in_shape)
                k = 1
                for d in in_shape[axis:]:
                    k *= d
                mod = nn.Linear(k, p.num_output, bias=p.bias_term)
                extra = axis
                out = tuple(in_shape[:axis]) + (p.num_output,)
            elif t == "Pooling":
                mod, out = None, None
                extra = self._pool_args(lp.pooling_param, in_shape)
                out = (in_shape[0], in_shape[1]) + extra["out"]
            elif t == "BatchNorm":
                p = lp.batch_norm_param
                scale_bias = "scale_bias" in p.DESCRIPTOR.fields_by_name and p.scale_bias
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                fold = (not scale_bias and nxt is not None and nxt.type == "Scale"
                        and list(nxt.bottom) == tops and len(nxt.bottom) == 1)
                affine = scale_bias or fold
                mod = (nn.BatchNorm2d if len(in_shape) == 4 else nn.BatchNorm1d)(
                    in_shape[1], eps=max(p.eps, 1e-5) if scale_bias else p.eps,
                    momentum=1.0 - p.moving_average_fraction, affine=affine)
                if fold and not nxt.scale_param.bias_term:
                    mod.bias.requires_grad_(False)
                if fold:
                    folded.add(nxt.name)
                    tops = list(nxt.top)
                out = in_shape
            elif t == "Scale":
                mod = _Scale(in_shape[lp.scale_param.axis], lp.scale_param.bias_term)
                out = in_shape
            elif t == "Bias":
                p = lp.bias_param
                learn = not (len(lp.param) and lp.param[0].lr_mult == 0)
                mod = _Bias(in_shape[p.axis], p.filler.value, learn)
                out = in_shape
            elif t == "ReLU":
                mod = None
                extra = (lp.relu_param.negative_slope, tops[0] == bottoms[0])
                out = in_shape
            elif t == "Dropout":
                mod = nn.Dropout(lp.dropout_param.dropout_ratio)
                out = in_shape
            elif t == "LRN":
                p = lp.lrn_param
                mod = None
                extra = (p.local_size, p.alpha, p.beta, p.k, p.norm_region)
                out = in_shape
            elif t == "Eltwise":
                p = lp.eltwise_param
                mod = None
                extra = (p.operation, list(p.coeff))
                out = in_shape
            elif t == "Concat":
                p = lp.concat_param
                axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") \
                    else p.concat_dim
                axis %= len(in_shape)
                mod, extra = None, axis
                out = list(in_shape)
                out[axis] = sum(shapes[b][axis] for b in bottoms)
                out = tuple(out)
            elif t == "Flatten":
                mod, extra, out = None, None, (in_shape[0], -1)
            elif t == "Softmax":
                mod, extra, out = None, lp.softmax_param.axis, in_shape
            elif t == "SoftmaxWithLoss":
                lw = lp.loss_weight[0] if len(lp.loss_weight) else 1.0
                ignore = lp.loss_param.ignore_label if lp.loss_param.HasField(
                    "ignore_label") else -100
                mod, extra, out = None, (lw, ignore), ()
            elif t == "Accuracy":
                mod, extra, out = None, lp.accuracy_param.top_k, ()
            elif t == "Split":
                mod, extra, out = None, None, in_shape
            else:
                raise ValueError(f"torch_from_prototxt: layer type {t} ({lp.name}) is not "
                                 "supported")
            if mod is not None:
                self.mods[key] = mod
                # Caffe's ParamSpecs: the folded Scale's for a BVLC BatchNorm; NVCaffe forces
                # lr_mult = decay_mult = 1 on its scale and bias
                specs = list(lp.param)
                if t == "BatchNorm":
                    specs = list(nxt.param) if fold else []
                for j, (pname, _) in enumerate(mod.named_parameters()):
                    spec = specs[j] if j < len(specs) else None
                    lr = spec.lr_mult if spec is not None and spec.HasField("lr_mult") else 1.0
                    dm = spec.decay_mult if spec is not None and spec.HasField(
                        "decay_mult") else 1.0
                    self.lr_mults[f"mods.{key}.{pname}"] = (lr, dm)
            for top in tops:
                shapes[top] = out
            self.steps.append((t, bottoms, tops, key if mod is not None else None, extra))

    @staticmethod
    def _conv_out(shape, num_output, kernel, stride, pad, dilation):
        sizes = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1
                 for s, k, st, p, d in zip(shape[2:], kernel, stride, pad, dilation)]
        return (shape[0], num_output) + tuple(sizes)

    @staticmethod
    def _pool_args(p, shape):
        h, w = shape[2], shape[3]
        if p.global_pooling:
            kernel, stride, pad = (h, w), (1, 1), (0, 0)
        else:
            kernel = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else \
                (p.kernel_size, p.kernel_size)
            stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else \
                (p.stride, p.stride)
            pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
        floor = "round_mode" in p.DESCRIPTOR.fields_by_name and p.HasField("round_mode") \
            and p.round_mode == 1
        out = []
        for size, k, s, q in zip((h, w), kernel, stride, pad):
            n = (size + 2 * q - k + (0 if floor else s - 1)) // s + 1
            if q and (n - 1) * s >= size + q:
                n -= 1
            out.append(n)
        if p.pool not in (0, 1):
            raise ValueError("torch_from_prototxt: only MAX and AVE pooling")
        return {"max": p.pool == 0, "kernel": kernel, "stride": stride, "pad": pad,
                "ceil": not floor, "out": tuple(out)}

    def forward(self, inputs):
        blobs = dict(inputs)
        loss = None
        for t, bottoms, tops, key, extra in self.steps:
            if t == "Input":
                continue
            x = blobs[bottoms[0]] if bottoms else None
            if key is not None:
                mod = self.mods[key]
                if t == "InnerProduct":
                    y = mod(x.flatten(extra))
                else:
                    y = mod(x)
            elif t == "ReLU":
                slope, inplace = extra
                if slope:
                    y = F.leaky_relu(x, slope, inplace=inplace)
                else:
                    y = F.relu(x, inplace=inplace)
            elif t == "Pooling":
                if extra["max"]:
                    y = F.max_pool2d(x, extra["kernel"], extra["stride"], extra["pad"],
                                     ceil_mode=extra["ceil"])
                else:
                    # count_include_pad: Caffe divides by the window clipped to the padded image
                    y = F.avg_pool2d(x, extra["kernel"], extra["stride"], extra["pad"],
                                     ceil_mode=extra["ceil"], count_include_pad=True)
            elif t == "LRN":
                size, alpha, beta, k, region = extra
                if region == 0:
                    y = F.local_response_norm(x, size, alpha, beta, k)
                else:
                    sq = F.avg_pool2d(x * x, size, 1, (size - 1) // 2, count_include_pad=True)
                    y = x * (k + alpha * sq).pow(-beta)
            elif t == "Eltwise":
                op, coeff = extra
                xs = [blobs[b] for b in bottoms]
                if op == 1:                              # SUM
                    y = xs[0] * coeff[0] if coeff else xs[0]
                    for j, v in enumerate(xs[1:], 1):
                        y = y + (v * coeff[j] if coeff else v)
                elif op == 0:                            # PROD
                    y = xs[0]
                    for v in xs[1:]:
                        y = y * v
                else:                                    # MAX
                    y = xs[0]
                    for v in xs[1:]:
                        y = torch.maximum(y, v)
            elif t == "Concat":
                y = torch.cat([blobs[b] for b in bottoms], extra)
            elif t == "Flatten":
                y = x.flatten(1)
            elif t == "Softmax":
                y = F.softmax(x, extra)
            elif t == "SoftmaxWithLoss":
                weight, ignore = extra
                label = blobs[bottoms[1]].long()
                if x.dim() > 2 and label.dim() == 1:     # (N, C, 1, 1): a 1x1 classifier
                    x = x.reshape(x.shape[0], x.shape[1])
                y = F.cross_entropy(x, label, ignore_index=ignore)
                loss = y * weight if loss is None else loss + y * weight
            elif t == "Accuracy":
                with torch.no_grad():
                    label = blobs[bottoms[1]].long()
                    top = x.topk(extra, 1).indices
                    y = (top == label[:, None]).any(1).float().mean()
            elif t == "Split":
                for top in tops:
                    blobs[top] = x
                continue
            blobs[tops[0]] = y
        return loss, blobs


def make_optimizer(model, lr, momentum, weight_decay):
    """torch.optim.SGD with Caffe's per-parameter lr_mult and decay_mult (lr_mult 0: frozen)."""
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_mult, decay_mult = model.lr_mults.get(name, (1.0, 1.0))
        if lr_mult == 0:
            param.requires_grad_(False)
            continue
        groups.setdefault((lr_mult, decay_mult), []).append(param)
    return torch.optim.SGD([{"params": ps, "lr": lr * lm, "weight_decay": weight_decay * dm}
                            for (lm, dm), ps in groups.items()], lr=lr, momentum=momentum)
