"""Loss kernels: Caffe's loss layers' CPU loops over flat arrays, plus loss normalization.

As in kernels/neuron.py, scalars come in the arrays' dtype and the arithmetic keeps the C++
expression types (float sums stay float and run in Caffe's order), so float32 losses and
gradients match Caffe's. Labels are read from float arrays and truncated toward zero, as
`static_cast<int>` does.
"""
import math

import numpy as np


from .jit import kernel
# LossParameter.NormalizationMode values (caffe.proto)
FULL, VALID, BATCH_SIZE, NONE = 0, 1, 2, 3
#: Caffe's kLOG_THRESHOLD: probabilities are clamped before log
LOG_THRESHOLD = 1e-20


def normalization_mode(has_normalization, normalization, has_normalize, normalize, default):
    """LossParameter's mode: `normalization` when given, else the deprecated `normalize`
    (true VALID, false BATCH_SIZE), else the layer's historic default."""
    if has_normalization:
        return normalization
    if has_normalize:
        return VALID if normalize else BATCH_SIZE
    return default


def normalizer(mode, outer_num, inner_num, valid_count):
    """Caffe's LossLayer::GetNormalizer; at least 1 (a multi-task net may give no labels)."""
    if mode == FULL:
        n = outer_num * inner_num
    elif mode == VALID:
        n = outer_num * inner_num if valid_count == -1 else valid_count
    elif mode == BATCH_SIZE:
        n = outer_num
    elif mode == NONE:
        n = 1
    else:
        raise ValueError(f"Unknown normalization mode: {mode}")
    return max(1.0, float(n))


# --- SigmoidCrossEntropyLoss ----------------------------------------------------------------
@kernel
def sigmoid_cross_entropy_forward(x, target, has_ignore_label, ignore_label):
    """Summed loss -[t log p + (1 - t) log(1 - p)], p = sigmoid(x), in its stable form.

    Returns (loss, valid_count); entries whose int(target) is ignore_label are skipped.
    """
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    two = x.dtype.type(2)
    loss = zero
    valid = 0
    for i in range(x.size):
        if has_ignore_label and int(target[i]) == ignore_label:
            continue
        v = x[i]
        ge = one if v >= zero else zero
        loss -= v * (target[i] - ge) - math.log(one + math.exp(v - two * v * ge))
        valid += 1
    return loss, valid


@kernel
def sigmoid_cross_entropy_backward(prob, target, has_ignore_label, ignore_label, scale, out):
    """out = scale * (sigmoid(x) - t), zero where the target is ignored."""
    zero = prob.dtype.type(0)
    for i in range(prob.size):
        g = prob[i] - target[i]
        if has_ignore_label and int(target[i]) == ignore_label:
            g = zero
        out[i] = scale * g


# --- HingeLoss ----------------------------------------------------------------------------------
@kernel
def hinge_margins(x, label, num, dim, out):
    """out = max(0, 1 - delta * x), delta = +1 at the label, -1 elsewhere (Caffe's forward)."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        out[i] = x[i]
    for i in range(num):
        j = i * dim + int(label[i])
        out[j] = -out[j]
    for i in range(x.size):
        v = one + out[i]
        out[i] = v if zero < v else zero


@kernel
def hinge_backward(margins, label, num, dim, l1, scale, out):
    """L1: scale * sign(m) * delta; L2: scale * m * delta (scale holds Caffe's 2/num there)."""
    zero = margins.dtype.type(0)
    one = margins.dtype.type(1)
    for i in range(margins.size):
        out[i] = margins[i]
    for i in range(num):
        j = i * dim + int(label[i])
        out[j] = -out[j]
    for i in range(margins.size):
        v = out[i]
        if l1:
            v = one if v > zero else (-one if v < zero else zero)
        out[i] = v * scale


# --- ContrastiveLoss ---------------------------------------------------------------------------
@kernel
def contrastive_forward(diff, label, num, channels, margin, legacy, dist_sq):
    """Summed loss over pairs: d^2 if similar, else max(margin - d, 0)^2 (legacy: margin - d^2).

    `diff` is a - b (num x channels); fills dist_sq[i] = |a_i - b_i|^2.
    """
    zero = diff.dtype.type(0)
    loss = zero
    for i in range(num):
        row = diff[i * channels:(i + 1) * channels]
        d2 = np.dot(row, row)            # BLAS, as caffe_cpu_dot
        dist_sq[i] = d2
        if int(label[i]) != 0:
            loss += d2
        elif legacy:
            m = margin - d2
            loss += zero if m < zero else m          # std::max(m, 0)
        else:
            m = margin - math.sqrt(d2)
            m = zero if m < zero else m
            loss += m * m
    return loss


@kernel
def contrastive_backward(diff, dist_sq, label, num, channels, alpha, margin, legacy, out):
    """Gradient for one side: alpha is +-loss_weight / num (sign + for a, - for b)."""
    zero = diff.dtype.type(0)
    eps = diff.dtype.type(1e-4)
    for i in range(num):
        active = True
        if int(label[i]) != 0:
            beta = alpha
        else:
            if legacy:
                mdist = margin - dist_sq[i]
                beta = -alpha
            else:
                dist = math.sqrt(dist_sq[i])
                mdist = margin - dist
                beta = -alpha * mdist / (dist + eps)
            active = mdist > zero
        for c in range(channels):
            k = i * channels + c
            out[k] = beta * diff[k] if active else zero


# --- InfogainLoss (softmax inside, as BVLC master) ------------------------------------------
@kernel
def softmax_forward(x, outer_num, channels, inner_num, out):
    """Caffe's SoftmaxLayer over the middle axis of an (outer, channels, inner) array."""
    zero = x.dtype.type(0)
    dim = channels * inner_num
    scale = np.empty(inner_num, x.dtype)
    for i in range(outer_num):
        base = i * dim
        for k in range(inner_num):
            scale[k] = x[base + k]
        for j in range(channels):
            for k in range(inner_num):
                v = x[base + j * inner_num + k]
                if scale[k] < v:
                    scale[k] = v
        for j in range(channels):
            for k in range(inner_num):
                idx = base + j * inner_num + k
                out[idx] = math.exp(x[idx] - scale[k])
        # Caffe sums with gemv; OpenBLAS adds the channels in blocks of four,
        # ((e0 + e1) + e2) + e3, then the rest one by one (bit-exact with the golden blobs)
        for k in range(inner_num):
            s = zero
            j = 0
            while j + 4 <= channels:
                idx = base + j * inner_num + k
                s += ((out[idx] + out[idx + inner_num]) + out[idx + 2 * inner_num]) \
                    + out[idx + 3 * inner_num]
                j += 4
            while j < channels:
                s += out[base + j * inner_num + k]
                j += 1
            scale[k] = s
        for j in range(channels):
            for k in range(inner_num):
                out[base + j * inner_num + k] /= scale[k]


@kernel
def infogain_forward(prob, label, infogain, outer_num, num_labels, inner_num,
                     has_ignore_label, ignore_label):
    """Summed loss -sum_l H[label, l] log(max(p_l, 1e-20)); returns (loss, valid_count)."""
    threshold = prob.dtype.type(LOG_THRESHOLD)
    loss = prob.dtype.type(0)
    count = 0
    for i in range(outer_num):
        for j in range(inner_num):
            lab = int(label[i * inner_num + j])
            if has_ignore_label and lab == ignore_label:
                continue
            for m in range(num_labels):
                p = prob[i * inner_num * num_labels + m * inner_num + j]
                loss -= infogain[lab * num_labels + m] * math.log(
                    threshold if p < threshold else p)
            count += 1
    return loss, count


@kernel
def infogain_row_sums(infogain, num_labels, out):
    for r in range(num_labels):
        s = infogain.dtype.type(0)
        for c in range(num_labels):
            s += infogain[r * num_labels + c]
        out[r] = s


@kernel
def infogain_backward(prob, label, infogain, row_sums, outer_num, num_labels, inner_num,
                      has_ignore_label, ignore_label, out):
    """out = p * sum_l H[label, l] - H[label, :] (unscaled); returns the valid count."""
    zero = prob.dtype.type(0)
    dim = num_labels * inner_num
    count = 0
    for i in range(outer_num):
        for j in range(inner_num):
            lab = int(label[i * inner_num + j])
            if has_ignore_label and lab == ignore_label:
                for m in range(num_labels):
                    out[i * dim + m * inner_num + j] = zero
            else:
                for m in range(num_labels):
                    k = i * dim + m * inner_num + j
                    out[k] = prob[k] * row_sums[lab] - infogain[lab * num_labels + m]
                count += 1
    return count
