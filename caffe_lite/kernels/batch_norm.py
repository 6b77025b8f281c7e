"""Batch normalisation kernels: BVLC batch_norm_layer.cpp and NVCaffe's forms.

Arrays are viewed as (N, C, S) with S the product of the axes after the channel axis;
statistics are per channel, over N and S. All arithmetic stays in the data type, in the
order of the C++ code:

BVLC (row sums scaled by 1/(N*S) before the sum over N, division by the standard deviation):
  mean = sum_n (1/(N S) sum_s x);   var = same over (x - mean)^2
  y = (x - mean) / sqrt(var + eps)
  dx = (dy - (1/(N S)) (sum(dy) + sum(dy * y) * y)) / sqrt(var + eps)
  global stats: mean = blob0 * f, var = blob1 * f with f = 1/blob2 (0 if blob2 == 0); dx = dy / std

NVCaffe (sums first, then scaled; multiplication by (var + eps)^-0.5):
  mean = (1/(N S)) sum x;  y = (x - mean) * (var + eps)^-0.5
  dx = (dy - mean(dy) - mean(dy * y) * y) * (var + eps)^-0.5
"""
import numpy as np

from .channel import channel_dot, channel_sum


def _col(v):
    return v[None, :, None]


# --- BVLC -------------------------------------------------------------------------------------
def bvlc_batch_stats(x, mean, var):
    """Batch mean and biased variance into mean, var (C,); returns x - mean."""
    n_img, _, spatial = x.shape
    inv = x.dtype.type(1.0 / (n_img * spatial))
    channel_sum(x, inv, mean)
    centered = x - _col(mean)
    channel_dot(centered, centered, inv, var)
    return centered


def bvlc_global_stats(blob_mean, blob_var, blob_factor, mean, var):
    dt = blob_mean.dtype.type
    f = blob_factor[0]
    scale = dt(0) if f == 0 else dt(1) / f
    np.multiply(blob_mean, scale, out=mean)
    np.multiply(blob_var, scale, out=var)


def bvlc_update_running(blobs, mean, var, maf, m):
    """blob2 = blob2 * maf + 1; blob0 = maf*blob0 + mean; blob1 = maf*blob1 + m/(m-1) var."""
    dt = mean.dtype.type
    maf = dt(maf)
    blobs[2][0] = blobs[2][0] * maf + dt(1)
    blobs[0] *= maf
    blobs[0] += mean
    correction = dt(m) / dt(m - 1) if m > 1 else dt(1)
    blobs[1] *= maf
    blobs[1] += correction * var


def bvlc_normalize(centered, var, eps, top):
    """std = sqrt(var + eps) (returned); top = centered / std."""
    std = np.sqrt(var + var.dtype.type(eps))
    np.divide(centered, _col(std), out=top)
    return std


def bvlc_backward(x_norm, top_diff, std, use_global_stats, bottom_diff):
    if use_global_stats:
        np.divide(top_diff, _col(std), out=bottom_diff)
        return
    n_img, channels, spatial = x_norm.shape
    dt = x_norm.dtype.type
    one = dt(1)
    sum_dy_y = np.empty(channels, x_norm.dtype)
    sum_dy = np.empty(channels, x_norm.dtype)
    channel_dot(top_diff, x_norm, one, sum_dy_y)
    channel_sum(top_diff, one, sum_dy)
    tmp = _col(sum_dy_y) * x_norm
    tmp += _col(sum_dy)
    tmp *= dt(-1.0 / (n_img * spatial))
    tmp += top_diff
    np.divide(tmp, _col(std), out=bottom_diff)


# --- NVCaffe ----------------------------------------------------------------------------------
def nv_channel_mean(x, out):
    n_img, _, spatial = x.shape
    dt = x.dtype.type
    channel_sum(x, dt(1), out)
    out *= dt(1.0 / (n_img * spatial))


def nv_batch_stats(x, mean, var):
    """Batch mean and biased variance (sum, then scale); returns x - mean."""
    nv_channel_mean(x, mean)
    centered = x - _col(mean)
    nv_channel_mean(centered * centered, var)
    return centered


def nv_inv_std(var, eps):
    dt = var.dtype.type
    return np.power(var + dt(eps), dt(-0.5))


def nv_backward(x_norm, dx_norm, inv_std, bottom_diff):
    """bottom = (dxn - mean(dxn) - mean(dxn * y) * y) * inv_std."""
    channels = x_norm.shape[1]
    mean_dy_y = np.empty(channels, x_norm.dtype)
    mean_dy = np.empty(channels, x_norm.dtype)
    nv_channel_mean(dx_norm * x_norm, mean_dy_y)
    tmp = _col(mean_dy_y) * x_norm
    nv_channel_mean(dx_norm, mean_dy)
    tmp += _col(mean_dy)
    np.subtract(dx_norm, tmp, out=tmp)
    np.multiply(tmp, _col(inv_std), out=bottom_diff)
