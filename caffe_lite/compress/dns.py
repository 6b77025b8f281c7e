"""Dynamic Network Surgery's rules (Guo et al. 2016), as pure functions over arrays.

The official code (yiwenguo/Dynamic-Network-Surgery, FORK_FIELDS.md 4.1) and NNMC's
reproduction (4.2) share them; the layers in layers/dns.py call them:

  statistics      once per run, on the first TRAIN forward: over the non-zero entries of
                  w * mask, weights and biases pooled, mu = mean |w| and
                  std = sqrt(mean(w^2) - mu^2), accumulated in double as the C++ does
  probability     a mask update happens at a TRAIN forward with probability
                  (1 + gamma * iter) ^ (-power), and only while iter < iter_stop
  update_mask     with T = max(mu + c_rate * std, 0): a kept weight (mask 1) is cut when
                  |w| <= alpha_low * T, a cut one (mask 0) is spliced back when
                  |w| > alpha_high * T; in between the mask stays (hysteresis)
"""
import math

import numpy as np


def statistics(pairs):
    """(mu, std) of |w| over the non-zero entries of w * mask, for every (w, mask) pair
    pooled (weights and biases); (0, 0) when every entry is zero or masked off."""
    total = 0.0
    total_sq = 0.0
    count = 0
    for w, mask in pairs:
        kept = np.asarray(w, np.float64) * np.asarray(mask, np.float64)
        kept = kept[kept != 0]
        total += float(np.abs(kept).sum())
        total_sq += float(np.square(kept).sum())
        count += kept.size
    if count == 0:
        return 0.0, 0.0
    mu = total / count
    return mu, math.sqrt(max(total_sq / count - mu * mu, 0.0))


def threshold(mu, std, c_rate):
    """The pruning threshold T = max(mu + c_rate * std, 0)."""
    return max(mu + c_rate * std, 0.0)


def update_probability(gamma, power, iteration):
    """(1 + gamma * iter) ^ (-power): 1 at iteration 0, then decaying."""
    return (1.0 + gamma * iteration) ** (-power)


def should_update(gamma, power, iter_stop, iteration, draw):
    """Whether the masks change at this TRAIN forward; `draw` is a uniform sample in [0, 1),
    taken at every TRAIN forward as the C++ takes rand() before its test."""
    return update_probability(gamma, power, iteration) > draw and iteration < iter_stop


def update_mask(w, mask, t, alpha_low, alpha_high):
    """Cut kept weights with |w| <= alpha_low * t, splice back cut ones with
    |w| > alpha_high * t, in place on `mask` (float 0 / 1, the layer's state blob)."""
    a = np.abs(w)
    cut = (mask == 1) & (a <= alpha_low * t)
    splice = (mask == 0) & (a > alpha_high * t)
    mask[cut] = 0
    mask[splice] = 1
