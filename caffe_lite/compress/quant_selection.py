"""Which layers caffe-jacinto quantizes: pure functions of a net's layer types and wiring.

qc_selection is caffe-0.17's EnableQuantizationForSelectedLayers, found on the graph (the
consumer of a layer's first top, the writer of its first bottom); adjacency_selection is
caffe-0.15 / 0.16-head AddQuantizationParams, by list order. Used by the net-level flow
(jacinto_quantize.py) and the solver-level flow (jacinto_quantize_solver.py).
"""
WEIGHTED = ("Convolution", "InnerProduct", "Deconvolution")
QC_TYPES = WEIGHTED + ("BatchNorm", "Scale", "ReLU", "PReLU", "Eltwise", "Concat", "Bias",
                       "Pooling")
#: the layers whose caffe-0.16 Forward calls Quantize (cuDNN ReLU included: TI trained on GPU)
QB_APPLIED = WEIGHTED + ("Eltwise", "Concat", "Scale", "ReLU")


class Graph:
    """The layer types, names and blob wiring of a net (with its Split layers), as TI's
    Net sees them: bottoms[i] / tops[i] are blob ids."""

    def __init__(self, types, names, bottoms, tops):
        self.types, self.names = list(types), list(names)
        self.bottoms, self.tops = [list(b) for b in bottoms], [list(t) for t in tops]

    @classmethod
    def of(cls, net):
        recs = net._layer_records
        return cls([r.layer.type for r in recs], [r.name for r in recs],
                   [r.bottom_ids for r in recs], [r.top_ids for r in recs])

    def __len__(self):
        return len(self.types)

    def next_id(self, i):
        """The first consumer of the first consumed top of layer i (GetTopLayerIds)."""
        for blob in self.tops[i]:
            for j in range(i + 1, len(self)):
                if blob in self.bottoms[j]:
                    return j
        return None

    def prev_id(self, i):
        """The last writer, before i, of layer i's first bottom (GetBottomLayerIds)."""
        for blob in self.bottoms[i][:1]:
            found = None
            for j in range(i):
                if blob in self.tops[j]:
                    found = j
            return found
        return None

    def type_of(self, j):
        return "" if j is None else self.types[j]


def qc_selection(graph, ignored_names=(), quantize_weights=True, quantize_activations=True):
    """caffe-0.17 EnableQuantizationForSelectedLayers: for each layer, (weights quantized?,
    indices of the tops quantized)."""
    out = []
    ignored = set(ignored_names)
    for i, t in enumerate(graph.types):
        nxt = graph.type_of(graph.next_id(i))
        prev_id = graph.prev_id(i)
        prv = graph.type_of(prev_id)
        prv2 = graph.type_of(graph.prev_id(prev_id)) if prev_id is not None else ""
        merged = False
        if t in WEIGHTED:
            merged = nxt in ("BatchNorm", "Scale", "ReLU")
        elif t == "BatchNorm":
            merged = nxt in ("Scale", "ReLU") or (nxt == "Convolution" and prv != "Convolution")
        elif t == "Scale":
            merged = nxt == "ReLU" or (nxt == "Convolution" and "Convolution" not in (prv, prv2))
        is_data = "data" in t.lower()
        selected = (t in QC_TYPES or is_data) and graph.names[i] not in ignored
        weights = bool(quantize_weights and selected and t in WEIGHTED)
        tops = []
        if quantize_activations and selected and not merged:
            tops = list(range(min(1, len(graph.tops[i])) if is_data else len(graph.tops[i])))
        out.append((weights, tops))
    return out


def adjacency_selection(types):
    """caffe-0.15 / 0.16-head AddQuantizationParams, by list order: for each layer
    (gets a quantization_param, weights quantized, outputs quantized)."""
    out = []
    n = len(types)
    for i, t in enumerate(types):
        nxt = types[i + 1] if i + 1 < n else None
        has, weights, outs = False, False, False
        if t in ("Convolution", "InnerProduct"):
            has, weights = True, True
            outs = nxt is not None and nxt not in ("ReLU", "BatchNorm")
        elif t == "BatchNorm":
            has = True
            outs = nxt is not None and nxt not in ("Convolution", "InnerProduct", "ReLU",
                                                   "Scale")
        elif t in ("ReLU", "Scale", "Pooling", "Concat"):
            has = outs = True
        elif t == "Eltwise":
            has = outs = nxt is not None and nxt != "ReLU"
        elif t == "Deconvolution":
            has = weights = outs = True
        out.append((has, weights, outs))
    return out
