"""Wei Wen's SSL (wenwei202/caffe scnn): group lasso, per-element decay, frozen connections and
the sparsity report, as pure functions over one param array (FORK_FIELDS.md 3.2).

Every param is viewed as a matrix of shape[0] rows and count / shape[0] columns: a
convolution's num_output x (C/group * kh * kw), an InnerProduct's N x K, a bias's N x 1.

Group lasso, for groups G tiling that matrix and strength lam:
    term      lam * sum_G ||w_G||_2
    gradient  lam * w / ||w_G||_2 for w in G, and 0 where ||w_G|| = 0
  block_lasso         blocks of ydimen rows x xdimen columns (BlockGroupLassoSpec), which
                      must tile the matrix: rows % ydimen == 0, columns % xdimen == 0
  breadth_lasso       one group per row (filter)
  kernel_shape_lasso  one group per column within each convolution group: the rows of group
                      k are filters k*no/g .. (k+1)*no/g - 1, so a group is a block of no/g
                      rows x 1 column
In the param's float32 as the fork: the squares summed in float32 (NumPy's pairwise order,
not the fork's running sum: a last-bit difference), the norm, w / norm and lam * that each
rounded to float32 (the fork's order: temp = w / norm, diff += lam * temp).

elementwise_decay is weight decay with per-element multipliers m (ParamSpec.decay_proto):
decay * (w * m) for L2, decay * (sign(w) * m) for L1.

Connectivity (LayerParameter.connectivity_mode, the fork's Blob::Disconnect): zero_out sets
|w| < 1e-4 (ZEROUT_THRESHOLD) to 0; eltwise_mask keeps |w| >= 1e-4; grpwise_mask keeps the
weights whose row and whose column (within its convolution group) hold a non-zero.

Sparsity report (the fork's SGDSolver display), percentages in float32: element (|w| < 1e-4),
column and row (exactly 0 over the whole matrix, groups ignored) and block (per
BlockGroupLassoSpec).
"""
import numpy as np

from ..errors import CaffeError

F32 = np.float32
ZEROUT_THRESHOLD = F32(1e-4)  # the fork's ZEROUT_THRESHOLD, compared in float32


def matrix_shape(shape):
    rows = int(shape[0]) if len(shape) else 1
    count = int(np.prod(shape, dtype=np.int64))
    return rows, (count // rows if rows else 0)


def as_matrix(data):
    return data.reshape(matrix_shape(data.shape))


def check_tiling(shape, ydimen, xdimen, what="param"):
    """CaffeError unless ydimen x xdimen blocks tile the matrix view of `shape`."""
    rows, cols = matrix_shape(shape)
    if ydimen < 1 or xdimen < 1 or rows % ydimen or cols % xdimen:
        dims = " ".join(str(d) for d in shape)
        raise CaffeError(f"{what}: block_group_lasso ydimen {ydimen} x xdimen {xdimen} does "
                         f"not tile its {rows}x{cols} weight matrix (shape {dims}): rows must "
                         f"be a multiple of ydimen and columns of xdimen")


def _blocks(mat, ydimen, xdimen):
    rows, cols = mat.shape
    return mat.reshape(rows // ydimen, ydimen, cols // xdimen, xdimen)


def block_lasso(data, ydimen, xdimen, lam, what="param"):
    """(gradient of lam * sum ||block||_2 with the shape of data, that term), in data's dtype
    (float32 for a param, as the fork; float64 for a gradient check)."""
    check_tiling(data.shape, ydimen, xdimen, what)
    dt = data.dtype.type
    blocks = _blocks(as_matrix(data), ydimen, xdimen)
    norms = np.sqrt(np.square(blocks).sum(axis=(1, 3)))
    per_entry = np.broadcast_to(norms[:, None, :, None], blocks.shape)
    scaled = np.zeros(blocks.shape, data.dtype)
    np.divide(blocks, per_entry, out=scaled, where=per_entry != 0)
    lam = dt(lam)
    return (lam * scaled).reshape(data.shape), lam * norms.sum()


def breadth_lasso(data, lam, what="param"):
    """Row-wise group lasso (one group per filter): (gradient, term)."""
    return block_lasso(data, 1, matrix_shape(data.shape)[1], lam, what)


def kernel_shape_lasso(data, group, lam, what="param"):
    """Column-wise group lasso within each of `group` row groups: (gradient, term)."""
    rows = matrix_shape(data.shape)[0]
    if group < 1 or rows % group:
        raise CaffeError(f"{what}: {rows} rows do not split into {group} groups")
    return block_lasso(data, rows // group, 1, lam, what)


def elementwise_decay(data, mult, kind, local_decay):
    """Weight decay with per-element multipliers: (gradient, term), the term as the fork
    displays it (L2: decay/2 * sum(w*m*w), L1: decay * sum|w*m|)."""
    dt = data.dtype.type
    decay = dt(local_decay)
    if kind == "L2":
        wm = data * mult
        return decay * wm, dt(np.dot(wm.ravel(), data.ravel())) * (decay / dt(2))
    if kind == "L1":
        return decay * (np.sign(data) * mult), np.abs(data * mult).sum() * decay
    raise CaffeError(f"decay_proto: unknown regularization type {kind} (known types: L1, L2)")


def plain_decay_term(data, kind, local_decay):
    """The weight-decay term the fork displays for a param without decay_proto."""
    dt = data.dtype.type
    decay = dt(local_decay)
    if kind == "L1":
        return np.abs(data).sum() * decay
    return dt(np.dot(data.ravel(), data.ravel())) * (decay / dt(2))


# --- connectivity --------------------------------------------------------------------------

def zero_mask(data):
    return np.abs(data) < ZEROUT_THRESHOLD


def zero_out(data):
    """Set |w| < 1e-4 to 0 in place (the fork's Blob::Zerout)."""
    np.copyto(data, 0, where=zero_mask(data))
    return data


def eltwise_mask(data):
    """DISCONNECTED_ELTWISE: True where a weight may move (|w| >= 1e-4)."""
    return ~zero_mask(data)


def grpwise_mask(data, group=1):
    """DISCONNECTED_GRPWISE: False on every all-zero row and, within each of `group` row
    groups, on every all-zero column."""
    rows, cols = matrix_shape(data.shape)
    per_group = as_matrix(data).reshape(group, rows // group, cols) != 0
    row_alive = per_group.any(axis=2)[:, :, None]
    col_alive = per_group.any(axis=1)[:, None, :]
    return (row_alive & col_alive).reshape(data.shape)


# --- the sparsity report -------------------------------------------------------------------

def element_sparsity(data):
    """Percent of entries with |w| < 1e-4."""
    zeros = np.count_nonzero(zero_mask(data))
    return F32(zeros) * F32(100) / F32(data.size)


def row_sparsity(data):
    """Percent of rows that are exactly 0."""
    mat = as_matrix(data)
    return F32(100) * (F32(np.count_nonzero(~mat.any(axis=1))) / F32(mat.shape[0]))


def column_sparsity(data):
    """Percent of columns (over all rows) that are exactly 0."""
    mat = as_matrix(data)
    return F32(100) * (F32(np.count_nonzero(~mat.any(axis=0))) / F32(mat.shape[1]))


def block_sparsity(data, ydimen, xdimen):
    """Percent of ydimen x xdimen blocks that are exactly 0."""
    alive = _blocks(as_matrix(data) != 0, ydimen, xdimen).any(axis=(1, 3))
    return F32(100 * np.count_nonzero(~alive)) / F32(alive.size)
