"""Fault injection, numbers: a NaN or inf never reaches the published labels. Settings refuse non-finite values
(test_settings_schema.py); what still turns the class probabilities non-finite refuses the sweep."""

import numpy as np
import pytest

from clip_seg3d_ros.runtime.runtime import NonFiniteOutputError, SegmentRuntime
from clip_seg3d_ros.runtime.settings import RuntimeSettings


def test_non_finite_probabilities_are_refused_not_published(segmenter, synthetic_sweep):
    # A NaN reaching the classifier (here a NaN calibration bias set behind the settings' back) used to label
    # every point class 0 with NaN scores; the threshold could not catch NaN. Now the sweep is refused.
    runtime = SegmentRuntime(segmenter, score_threshold=0.5)
    runtime.set_calibration_bias(float("nan"))
    with pytest.raises(NonFiniteOutputError, match=r"non-finite class probabilities in \d+ of \d+ voxels"):
        runtime.process(synthetic_sweep)
    runtime.set_calibration_bias(0.0)
    assert np.isfinite(runtime.process(synthetic_sweep).scores).all()


@pytest.mark.parametrize("name", ["score_threshold", "calibration_bias", "fusion_weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_runtime_numbers_are_refused_at_start_up_and_at_runtime(segmenter, name, value):
    with pytest.raises(ValueError, match=name):
        RuntimeSettings(checkpoint="model.pt", **{name: value}).validated()
    runtime = SegmentRuntime(segmenter)
    with pytest.raises(ValueError, match=name):
        runtime.apply(name, value)
    assert runtime.segmenter.calibration_bias == 0.0 and runtime.score_threshold == 0.0
