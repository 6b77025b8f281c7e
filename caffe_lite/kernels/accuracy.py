"""Accuracy's count of correct positions in one pass (layers/accuracy.py's common case: no
ignore_label, no per-class top). A deploy net's last layer runs once per forward, and at
batch 1 the NumPy form of this count (eight calls) cost more than the layer's arithmetic."""


from .jit import kernel

@kernel(nogil=True)
def count_correct(scores, label, top_k):
    """The positions (i, j) of scores (outer, classes, inner) where at most top_k classes
    score >= the class int(label[i, j]) (the true class counts itself; a NaN score never
    does); -1 where a label is outside (-1, classes) or NaN, for the caller's general path
    to report."""
    classes = scores.shape[1]
    correct = 0
    for i in range(scores.shape[0]):
        for j in range(scores.shape[2]):
            value = label[i, j]
            if not (value > -1 and value < classes):
                return -1
            true_score = scores[i, int(value), j]
            at_least = 0
            for c in range(classes):
                if scores[i, c, j] >= true_score:
                    at_least += 1
            if at_least <= top_k:
                correct += 1
    return correct
