"""Self-training: the model's own confident predictions become labels, also where no camera looks.

At the start of each self-training round the model (eval mode, no augmentation) labels every training
sweep. Its labels are added where a point has neither an annotation nor a projected pseudo label (the
teacher's labels stay: replacing them with the model's own, in a first version, made the model forget the
unseen classes it was least sure of, e.g. unseen mIoU 21.7 -> 5.9 on the synthetic benchmark).

A prediction becomes a label if the point has no annotation, its class is one pseudo labels may
teach (unseen classes in the zero-shot setting, all in the annotation-free one), its score reaches
``min_score``, and it is among the most confident ``top_fraction`` of that class's candidates over the
whole training set. The last rule is a per-class threshold (a quantile of the class's own scores), so a
rare or hard class, whose scores are lower, keeps its share instead of being drowned by easy classes
(the class-balanced selection of CBST, Zou et al. 2018).
"""

from __future__ import annotations

import numpy as np

from clip_seg3d_ros.datasets.sample import IGNORE_INDEX


def candidates(labels: np.ndarray, predicted: np.ndarray, scores: np.ndarray, allowed: np.ndarray,
               min_score: float) -> np.ndarray:
    """(N,) bool: points that may receive a self-training label."""
    return (labels < 0) & (predicted >= 0) & allowed[np.maximum(predicted, 0)] & (scores >= min_score)


SCORE_BINS = 1000  # histogram resolution of the per-class quantiles: scores are in [0, 1], so 0.001


def score_histogram(predicted: np.ndarray, scores: np.ndarray, is_candidate: np.ndarray,
                    num_classes: int) -> np.ndarray:
    """(C, SCORE_BINS) int64 counts of the candidates' scores per predicted class, for one or more sweeps.

    Histograms add up over sweeps and processes (an all-reduce), so the quantiles below are over the whole
    training set without keeping every prediction in memory.
    """
    bins = np.minimum((scores[is_candidate] * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
    flat = predicted[is_candidate].astype(np.int64) * SCORE_BINS + bins
    return np.bincount(flat, minlength=num_classes * SCORE_BINS).reshape(num_classes, SCORE_BINS)


def class_thresholds(histogram: np.ndarray, top_fraction: float) -> np.ndarray:
    """(C,) per-class score threshold keeping the most confident ``top_fraction`` of each class's candidates.

    The threshold is the lower edge of the score bin in which the top fraction is reached (so slightly more
    than the fraction may be kept, never less); +inf for a class without candidates.
    """
    thresholds = np.full(histogram.shape[0], np.inf)
    for cls, counts in enumerate(histogram):
        total = counts.sum()
        if total == 0:
            continue
        from_top = np.cumsum(counts[::-1])  # candidates with a score in bin >= k, k from the top
        bins_needed = int(np.searchsorted(from_top, np.ceil(top_fraction * total)))
        thresholds[cls] = (SCORE_BINS - 1 - bins_needed) / SCORE_BINS
    return thresholds


def select(labels: np.ndarray, predicted: np.ndarray, scores: np.ndarray, is_candidate: np.ndarray,
           thresholds: np.ndarray) -> np.ndarray:
    """(N,) int64 self-training labels of one sweep: the candidates at or above their class's threshold."""
    chosen = is_candidate & (scores >= thresholds[np.maximum(predicted, 0)])
    return np.where(chosen, predicted, IGNORE_INDEX).astype(np.int64)
