"""What the node reports on ``/diagnostics``: sweeps processed, skipped (by reason), dropped, and stage times.

Counted here, free of ROS, so that the rules are tested: which events make the status WARN or ERROR, and
what the numbers mean. The level judges the interval since the previous report:

- ERROR: a sweep was refused for non-finite output (whatever else happened: labels are not being published
  for that input), or sweeps were skipped for a fault and none was processed;
- WARN: some sweeps were skipped for a fault or dropped, cameras were left out, or points were ignored for a
  reason other than NaN/inf coordinates (off the voxel grid, a broken intensity: a sensor fault or a bad
  driver; NaN coordinates are how organised clouds mark "no return", so they are only counted);
- OK: otherwise (sweeps processed, idle with nobody subscribed, or waiting for sweeps).

The node turns a :class:`DiagnosticReport` into a ``diagnostic_msgs/DiagnosticStatus`` (levels are that
message's OK = 0, WARN = 1, ERROR = 2). The counts:

- processed: sweeps labelled and published;
- points ignored[reason]: points of processed sweeps kept out of the network and labelled ignored
  (:func:`~clip_seg3d_ros.segmenter.unusable_points`);
- skipped[reason]: sweeps not labelled, e.g. ``no_subscribers`` (nobody listens: no work, as Autoware's
  LiDAR nodes do), ``bad_message`` (undecodable cloud or image), ``non_finite_output`` (the network's class
  probabilities held NaN/inf: nothing published), ``processing_error``;
- dropped: sweeps replaced by a newer one before the worker took them (processing slower than the input);
- cameras_left_out[reason]: camera images not used for fusion (the sweep is labelled with the other cameras,
  or from 3D alone), e.g. ``missing_transform`` (no TF from the LiDAR to the camera yet),
  ``missing_camera_info``, ``bad_image``.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

OK, WARN, ERROR = 0, 1, 2
IDLE_REASONS = frozenset({"no_subscribers"})  # skips that are no fault of the input or the node
ERROR_REASONS = frozenset({"non_finite_output"})  # skips that mean no trustworthy labels at all
ROUTINE_IGNORED_POINTS = frozenset({"non-finite coordinates"})  # "no return" in organised clouds


@dataclass
class DiagnosticReport:
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class SweepStatistics:
    """Thread-safe counters; :meth:`report` summarises everything and judges what happened since the last report."""

    def __init__(self, timing_window: int = 100) -> None:
        self._lock = threading.Lock()
        self.processed = 0
        self.dropped = 0
        self.skipped: Counter[str] = Counter()
        self.cameras_left_out: Counter[str] = Counter()
        self.ignored_points: Counter[str] = Counter()
        self._timings: dict[str, deque[float]] = {}
        self._timing_window = timing_window
        self._last = (0, 0, Counter(), Counter(), Counter())  # processed, dropped, skipped, left out, ignored

    def record_processed(self, timings_ms: dict[str, float], ignored_points: dict[str, int] | None = None) -> None:
        with self._lock:
            self.processed += 1
            self.ignored_points.update(ignored_points or {})
            for stage, milliseconds in timings_ms.items():
                self._timings.setdefault(stage, deque(maxlen=self._timing_window)).append(float(milliseconds))

    def record_skipped(self, reason: str) -> None:
        with self._lock:
            self.skipped[reason] += 1

    def record_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count

    def record_camera_left_out(self, reason: str) -> None:
        with self._lock:
            self.cameras_left_out[reason] += 1

    def mean_timings_ms(self) -> dict[str, float]:
        """Mean milliseconds per stage over the last ``timing_window`` processed sweeps."""
        with self._lock:
            return {stage: sum(values) / len(values) for stage, values in self._timings.items() if values}

    def report(self) -> DiagnosticReport:
        """Totals as key/values; the level and message describe the interval since the previous report."""
        timings = self.mean_timings_ms()
        with self._lock:
            last_processed, last_dropped, last_skipped, last_left_out, last_ignored = self._last
            new_processed = self.processed - last_processed
            new_dropped = self.dropped - last_dropped
            new_skipped = self.skipped - last_skipped
            new_left_out = self.cameras_left_out - last_left_out
            new_ignored = self.ignored_points - last_ignored
            self._last = (self.processed, self.dropped, Counter(self.skipped), Counter(self.cameras_left_out),
                          Counter(self.ignored_points))
            values = {"sweeps processed": str(self.processed), "sweeps dropped": str(self.dropped)}
            for reason, count in sorted(self.skipped.items()):
                values[f"sweeps skipped: {reason}"] = str(count)
            for reason, count in sorted(self.ignored_points.items()):
                values[f"points ignored: {reason}"] = str(count)
            for reason, count in sorted(self.cameras_left_out.items()):
                values[f"cameras left out of a sweep: {reason}"] = str(count)
        values.update({f"mean {stage} ms": f"{milliseconds:.1f}" for stage, milliseconds in timings.items()})

        faults = {reason: count for reason, count in new_skipped.items() if reason not in IDLE_REASONS}
        problems = []
        if faults:
            problems.append("skipping sweeps (" + ", ".join(f"{r}: {c}" for r, c in sorted(faults.items())) + ")")
        if new_dropped:
            problems.append(f"dropped {new_dropped} sweeps: processing is slower than the input")
        if new_left_out:
            problems.append("cameras left out of sweeps (" + ", ".join(
                f"{r}: {c}" for r, c in sorted(new_left_out.items())) + ")")
        unusual = {reason: count for reason, count in new_ignored.items() if reason not in ROUTINE_IGNORED_POINTS}
        if unusual:
            problems.append("points ignored (" + ", ".join(f"{r}: {c}" for r, c in sorted(unusual.items())) + ")")
        if (faults and not new_processed) or ERROR_REASONS & set(faults):
            return DiagnosticReport(ERROR, "; ".join(problems), values)
        if problems:
            return DiagnosticReport(WARN, "; ".join(problems), values)
        if new_processed:
            return DiagnosticReport(OK, f"processed {new_processed} sweeps", values)
        if new_skipped:
            return DiagnosticReport(OK, "idle: nobody subscribes to the output", values)
        return DiagnosticReport(OK, "waiting for sweeps", values)
