"""Self-training: the model's own confident predictions become labels, also where no camera looks.

:func:`make_labels` labels the training sweeps at the start of a round and writes the labels to the run folder
(:func:`labels_dir`), where the round's epochs read them (:func:`read_labels`) and a resumed run finds them;
the rules it applies are the plain numpy functions below it.

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

In the zero-shot setting the labels are then spread over segments: the connected components of the points
above the ground that have no annotation, which on real data are the unseen-class objects plus what the
annotators left unlabelled. A segment whose labels (the teacher's pseudo labels and the selected predictions)
agree on one class for at least ``segment_support`` of its points gives that class to its points without one:
a confident part labels its whole object (:func:`segments`, :func:`spread_over_segments`). Why: at the end
of CLIP-guided training with the front camera only, the model named only about a third of the unseen-class
points no camera sees correctly (trucks as other-vehicle, bicyclists as motorcyclist), so its own confident
predictions covered a few percent of those objects; the parts it was sure of are enough to label the rest.
The rule needs no camera, no class prior and nothing from the synthetic world; its risk on real data is a
segment that joins an unseen object to unlabelled clutter, which the support threshold limits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clip_seg3d_ros.sample import IGNORE_INDEX
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.sparse.coords import CoordinateIndex
from clip_seg3d_ros.sparse.kernel_map import submanifold_map
from clip_seg3d_ros.training.config import TrainConfig
from clip_seg3d_ros.training.data import PreparedSplit
from clip_seg3d_ros.training.distributed import ProcessGroup, all_reduce_sum, barrier
from clip_seg3d_ros.training.losses import combine_targets
from clip_seg3d_ros.vocabulary import Vocabulary
from clip_seg3d_ros.voxelize import voxelize


# -- a round's labels, in the run folder ------------------------------------------------------------------------
def labels_dir(out_dir: Path, round_index: int) -> Path:
    """Where round ``round_index``'s labels are: one .npy per training sweep, thresholds.json, and ``done``."""
    return Path(out_dir) / "self_training" / f"round_{round_index}"


def make_labels(folder: Path, model: torch.nn.Module, vocabulary: Vocabulary, samples: PreparedSplit,
                config: TrainConfig, group: ProcessGroup, device: torch.device, progress: bool = True) -> None:
    """Label every training sweep with the current model into ``folder`` (:func:`labels_dir`), once per round.

    Each process labels its share of the sweeps; the per-class score histograms are summed over all of
    them before the thresholds are set. Labels go to files, so a resumed run reuses them (``folder/done``),
    with thresholds.json and, where the sweeps have ground truth (never used for training),
    label_quality.json: how right the labels are, in and out of the cameras' view. Leaves the model in training
    mode.
    """
    if group.distributed:  # label with one model everywhere: rank 0's BatchNorm statistics
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
    key = labels_key(model, vocabulary, config)
    done = folder / "done"
    if done.exists() and done.read_text() == key:
        return
    barrier(group)  # every process has read the marker before the main one clears the folder
    if group.is_main and folder.exists():  # another model's or config's labels (or a half-made round)
        shutil.rmtree(folder)
    barrier(group)
    folder.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(model, vocabulary, device, calibration_bias=0.0)
    allowed = ~np.array(vocabulary.seen) if config.setting == "zero_shot" else np.ones(len(vocabulary), dtype=bool)
    mine = range(group.rank, len(samples), group.world_size)
    histogram = np.zeros((len(vocabulary), SCORE_BINS), dtype=np.int64)
    predictions = {}
    for index in tqdm(mine, desc=f"self-training labels, {folder.name}", unit="sweep",
                      disable=not (progress and group.is_main)):
        sample = samples[index]
        predicted, scores = segmenter(sample.points)
        is_candidate = candidates(sample.labels, predicted, scores, allowed, config.schedule.self_training_min_score)
        histogram += score_histogram(predicted, scores, is_candidate, len(vocabulary))
        predictions[index] = (predicted, scores, is_candidate)
    thresholds = class_thresholds(all_reduce_sum(histogram, group), config.schedule.self_training_top_fraction)
    schedule = config.schedule
    quality = np.zeros((2, 3, len(vocabulary)), dtype=np.int64)
    for index, (predicted, scores, is_candidate) in predictions.items():
        sample = samples[index]
        labels = select(sample.labels, predicted, scores, is_candidate, thresholds)
        if schedule.self_training_segment_voxel > 0 and config.setting == "zero_shot":
            # Segments of the unannotated points above the ground vote (annotation-free: every point is
            # unannotated, and segments would join objects to each other and to the vegetation: no spreading).
            xyz = sample.points[:, :3]
            segment = segments(xyz, (sample.labels < 0) & above_ground(xyz), schedule.self_training_segment_voxel)
            votes = combine_targets(sample.pseudo_labels, labels)
            labels = spread_over_segments(votes, segment, len(vocabulary), schedule.self_training_segment_support)
        np.save(folder / f"{index:06d}.npy", labels.astype(np.int16))
        if sample.truth is not None:
            quality += label_counts(labels, sample.pseudo_labels, sample.truth, sample.point_cell >= 0,
                                    len(vocabulary))
    model.train()
    quality = all_reduce_sum(quality, group)
    barrier(group)
    if group.is_main:
        (folder / "label_quality.json").write_text(json.dumps(label_quality(quality, vocabulary.names, allowed),
                                                              indent=1))
        (folder / "thresholds.json").write_text(json.dumps(
            {name: (None if np.isinf(t) else float(t)) for name, t in zip(vocabulary.names, thresholds, strict=True)},
            indent=1))
        done.write_text(key)
    barrier(group)


def labels_key(model: torch.nn.Module, vocabulary: Vocabulary, config: TrainConfig) -> str:
    """What a round's labels are made from, as a SHA-256: the model's weights and buffers, the class names and
    the training config. Cached labels are reused only under the same key (a resumed run), never another run's
    or another config's."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps([vocabulary.names, config.to_dict()], sort_keys=True).encode())
    return digest.hexdigest()


def read_labels(folder: Path, index: int) -> np.ndarray:
    """(N,) int64 the labels :func:`make_labels` gave training sweep ``index``."""
    return np.load(folder / f"{index:06d}.npy").astype(np.int64)


# -- the rules ---------------------------------------------------------------------------------------------------


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


def above_ground(xyz: np.ndarray, cell_size: float = 2.0, clearance: float = 0.3) -> np.ndarray:
    """(N,) bool: points more than ``clearance`` metres above the lowest point of their ``cell_size`` bird's-eye
    cell (the ground there, wherever the LiDAR sees some of it). Ground connects every object of a sweep; with
    it removed, the segments of :func:`segments` are objects."""
    cells = np.floor(xyz[:, :2] / cell_size).astype(np.int64)
    _, cell = np.unique(cells, axis=0, return_inverse=True)
    lowest = np.full(cell.max() + 1 if len(cell) else 0, np.inf)
    np.minimum.at(lowest, cell, xyz[:, 2])
    return xyz[:, 2] > lowest[cell] + clearance


def label_counts(labels: np.ndarray, pseudo_labels: np.ndarray, truth: np.ndarray, in_view: np.ndarray,
                 num_classes: int) -> np.ndarray:
    """(2, 3, C) int64 counts for :func:`label_quality` over the points self-training labels on top of the
    teacher (those without a pseudo label): [out of view, in view] x [truth points of the class, labelled as the
    class, labelled correctly] per class. Counts add up over sweeps and processes."""
    counts = np.zeros((2, 3, num_classes), dtype=np.int64)
    open_points = pseudo_labels < 0
    for view in (0, 1):
        chosen = open_points & (in_view == bool(view))
        labelled = chosen & (labels >= 0)
        counts[view, 0] = np.bincount(truth[chosen & (truth >= 0)], minlength=num_classes)
        counts[view, 1] = np.bincount(labels[labelled], minlength=num_classes)
        counts[view, 2] = np.bincount(labels[labelled & (labels == truth)], minlength=num_classes)
    return counts


def label_quality(counts: np.ndarray, class_names: list[str], allowed: np.ndarray) -> dict:
    """{"in_view" / "out_of_view": {class: {truth_points, labelled, recall, precision}}} for the classes
    self-training may label, from summed :func:`label_counts` (recall / precision None without points)."""
    quality = {}
    for view, key in ((1, "in_view"), (0, "out_of_view")):
        quality[key] = {}
        for cls in np.flatnonzero(allowed):
            truth, labelled, correct = (int(value) for value in counts[view, :, cls])
            quality[key][class_names[cls]] = {
                "truth_points": truth, "labelled": labelled,
                "recall": correct / truth if truth else None, "precision": correct / labelled if labelled else None}
    return quality


def segments(xyz: np.ndarray, members: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N,) int64 segment of each point: the connected components (26-neighbourhood) of the ``voxel_size``
    voxels that the ``members`` points occupy, numbered from 0; -1 for the points that are not members.

    The voxels and their neighbour pairs come from the network's own voxelization and 3x3x3 submanifold kernel
    map; then union-find by label propagation: every voxel takes the smallest label among its neighbours, then
    labels jump to their label's label, until nothing changes.
    """
    segment = np.full(len(xyz), -1, dtype=np.int64)
    if not members.any():
        return segment
    member_xyz = torch.from_numpy(np.ascontiguousarray(xyz[members], dtype=np.float32))
    voxels = voxelize(member_xyz, member_xyz.new_zeros(len(member_xyz), 1), voxel_size)
    neighbours = submanifold_map(CoordinateIndex(voxels.coords), kernel_size=3, stride=1)
    first, second = neighbours.rows_in.numpy(), neighbours.rows_out.numpy()
    label = np.arange(len(voxels.coords))
    while True:
        smaller = np.minimum(label[first], label[second])
        updated = label.copy()
        np.minimum.at(updated, first, smaller)
        np.minimum.at(updated, second, smaller)
        updated = updated[updated]
        if np.array_equal(updated, label):
            break
        label = updated
    segment[members] = np.unique(label, return_inverse=True)[1][voxels.point_to_voxel.numpy()]
    return segment


def spread_over_segments(labels: np.ndarray, segment: np.ndarray, num_classes: int, min_support: float) -> np.ndarray:
    """(N,) ``labels`` with every unlabelled point of a segment given the segment's majority label, where that
    label is carried by at least ``min_support`` of the segment's points (a confident part labels its whole
    object; a segment with too few or split votes stays as it was). ``segment``: from :func:`segments`."""
    in_segment = segment >= 0
    if not in_segment.any():  # no point in any segment (nothing above the ground, or all annotated)
        return labels.copy()
    voted = in_segment & (labels >= 0)
    num_segments = int(segment.max()) + 1
    votes = np.bincount(segment[voted] * num_classes + labels[voted],
                        minlength=num_segments * num_classes).reshape(num_segments, num_classes)
    size = np.bincount(segment[in_segment], minlength=num_segments)
    winner = votes.argmax(axis=1)
    supported = votes.max(axis=1) >= min_support * np.maximum(size, 1)
    filled = labels.copy()
    open_points = in_segment & (labels < 0)
    take = open_points & supported[np.maximum(segment, 0)]
    filled[take] = winner[segment[take]]
    return filled
