"""Tile: repeat the bottom `tiles` times along `axis` (Caffe's TileLayer).

Caffe tiles the whole trailing block: with outer = prod(shape[:axis]) and
inner = prod(shape[axis:]), top viewed as (outer, tiles, inner) holds the bottom's
(outer, inner) row in every tile, so top.shape[axis] = tiles * bottom.shape[axis].
  bottom.diff = sum over tiles of top.diff, added tile by tile in order (copy, then axpy).

tile_param:
  axis   int32, default 1 (negative counts from the end)
  tiles  int32, required, > 0
"""
import numpy as np

from . import register
from .base import Layer


@register("Tile")
class TileLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.tile_param
        if not p.HasField("tiles"):
            raise self.error("Number of tiles must be specified (tile_param.tiles)")
        if p.tiles <= 0:
            raise self.error(f"Number of tiles must be positive, got {p.tiles}")
        self.tiles = p.tiles

    def reshape(self, bottom, top):
        axis = self.canonical_axis(bottom[0], self.param.tile_param.axis)
        shape = list(bottom[0].shape)
        self.outer = bottom[0].count_range(0, axis)
        self.inner = bottom[0].count_range(axis)
        shape[axis] *= self.tiles
        top[0].reshape(shape)

    def forward_cpu(self, bottom, top):
        src = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = src

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = top[0].diff.reshape(self.outer, self.tiles, self.inner)
        out = bottom[0].diff.reshape(self.outer, self.inner)
        # tile by tile, not a pairwise np.sum: Caffe's order, so float32 matches bit for bit
        np.copyto(out, diff[:, 0])
        for t in range(1, self.tiles):
            out += diff[:, t]
