"""2D teachers for distillation (CLIP and its simulation) and the pseudo labels they give."""

from clip_seg3d_ros.teacher.base import DenseTeacher
from clip_seg3d_ros.teacher.cache import FeatureCache
from clip_seg3d_ros.teacher.open_clip_teacher import DRIVING_TEMPLATES, OpenClipTeacher, TeacherWeightsError
from clip_seg3d_ros.teacher.pseudo_labels import PseudoLabelSettings, dense_pseudo_labels, pseudo_labels_to_points
from clip_seg3d_ros.teacher.synthetic import SyntheticTeacher, SyntheticTeacherConfig

__all__ = [
    "DRIVING_TEMPLATES",
    "DenseTeacher",
    "FeatureCache",
    "OpenClipTeacher",
    "PseudoLabelSettings",
    "SyntheticTeacher",
    "SyntheticTeacherConfig",
    "TeacherWeightsError",
    "dense_pseudo_labels",
    "pseudo_labels_to_points",
]
