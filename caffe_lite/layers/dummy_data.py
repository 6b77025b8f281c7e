"""DummyData: tops filled by fillers, no bottoms (Caffe's DummyDataLayer).

dummy_data_param:
  shape { dim: ... }            once, or once per top
  num / channels / height / width   the legacy 4-d form, each once or once per top
                                (not together with shape)
  data_filler                   none (constant 0), one for all tops, or one per top
A top whose filler is "constant" is filled once at setup; the others are refilled on every
forward, as Caffe does to avoid rewriting constant blobs.
"""
from ..fillers import fill
from ..proto import caffe_pb2
from . import register
from .base import Layer


@register("DummyData")
class DummyDataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        if len(p.data_filler) not in (0, 1, n):
            raise self.error(f"Number of data fillers must be 0, 1 or equal to the number of "
                             f"tops: {n}; you specified {len(p.data_filler)} data fillers")
        legacy = len(p.num) or len(p.channels) or len(p.height) or len(p.width)
        if legacy:
            if len(p.shape):
                raise self.error("Both shape and legacy fields were specified")
            for field in ("num", "channels", "height", "width"):
                k = len(getattr(p, field))
                if k not in (1, n):
                    raise self.error(f"Must specify '{field}' once, or once per top blob "
                                     f"({n}); specified {k}")
        elif len(p.shape) not in (1, n):
            raise self.error(f"Must specify 'shape' once, or once per top blob ({n}); "
                             f"specified {len(p.shape)}")

        if len(p.data_filler) <= 1:
            filler = caffe_pb2.FillerParameter(type="constant", value=0)
            if p.data_filler:
                filler.CopyFrom(p.data_filler[0])
            self.fillers = [filler]
        else:
            self.fillers = list(p.data_filler)
        self.refill = [f.type != "constant" for f in self.fillers]

        def pick(values, i):
            return values[0] if len(values) == 1 else values[i]

        for i, t in enumerate(top):
            if legacy:
                t.reshape((pick(p.num, i), pick(p.channels, i), pick(p.height, i),
                           pick(p.width, i)))
            else:
                t.reshape(tuple(pick(p.shape, i).dim))
        # Constant tops are filled here, once; the rest on every forward.
        for i, t in enumerate(top):
            k = i if len(self.fillers) > 1 else 0
            if not self.refill[k]:
                fill(t, self.fillers[k])

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        for i, t in enumerate(top):
            k = i if len(self.fillers) > 1 else 0
            if self.refill[k]:
                fill(t, self.fillers[k])
