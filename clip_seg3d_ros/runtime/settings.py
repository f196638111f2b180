"""What decides how a sweep is labelled, free of ROS: the settings the node and rosbag replay share, and the
one schema every setting of the node is declared in.

Each setting is declared ONCE, as a field of a settings dataclass made by :func:`setting`: its name (the
field's), type (its default's), default, description, unit, range (``minimum``/``maximum``, or ``choices``), and
whether it can change at runtime. The dataclass is the typed value object; :meth:`Settings.schema` reads the
declarations back as :class:`Setting` entries, and everything else is made from those:

- the node (:mod:`clip_seg3d_ros.nodes.segment_node`) declares one ROS parameter per entry (description,
  range, read-only unless changeable) and checks every value, at start-up and from the parameter service,
  with :meth:`Setting.check`;
- replay (:mod:`clip_seg3d_ros.tools.replay`) makes one command-line option per runtime entry;
- ``config/segment.yaml`` is tested against the schema (test/test_settings_schema.py).

This module holds :class:`RuntimeSettings` (what replay shares with the node); the node's own settings (topics,
queues, TF, diagnostics) are :class:`~clip_seg3d_ros.nodes.settings.NodeSettings`, declared the same way.

The rules of one value (type, finite, range, choices, required) live in :meth:`Setting.check`; rules between
settings or about the machine (a CUDA device that exists, camera topics when cameras are on) in the dataclass's
``validated``. Values are converted and checked here, not by ROS's declared types: ROS types an empty list as a
byte array (from YAML: a bool array), and a statically typed double would refuse ``score_threshold: 1``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

from clip_seg3d_ros.compute_choices import CPU_MATMULS, PRECISIONS, SPARSE_BACKENDS
from clip_seg3d_ros.device import resolve_device

SCHEMA_METADATA = "setting"
"""The key under which :func:`setting` keeps a field's schema entry in the dataclass field's metadata."""

MAX_THREADS = 256
"""Upper bound of ``num_threads``. torch's threads beyond the cores only slow every process down, and 256 is above
the cores of any robot's computer; a fixed number (not one read from this machine) so that one params file is
valid, and ``ros2 param describe`` says the same, on every machine. Larger is a typo."""

MAX_POINTS_LIMIT = 10_000_000
"""Upper bound of ``max_points``: far above any sensor's sweep (a 128-beam LiDAR sends a few hundred thousand
points); larger is a typo, and 0 already means no limit."""

MAX_CALIBRATION_BIAS = 2.0
"""``calibration_bias`` is in cosine units: cosines lie in [-1, 1], so a bias beyond 2 either way decides every
point's class by itself."""


@dataclass(frozen=True)
class Setting:
    """One parameter of the node (and, for a runtime setting, one option of replay), as :func:`setting` declared it.

    ``default`` gives the type: bool, int, float, str, or a tuple (a list of strings). Numbers have both bounds
    (a closed range, in ``unit``); strings may have ``choices``. ``changeable``: can change while sweeps are
    being labelled (``ros2 param set``); the others are read once at start-up.
    """

    name: str
    default: bool | int | float | str | tuple[str, ...]
    description: str
    unit: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[str, ...] = ()
    changeable: bool = False
    required: bool = False

    @property
    def type(self) -> type:
        return type(self.default)

    def rule(self) -> str:
        """The rule a value must follow, in words ("in [0, 1]", "one of ['auto', 'cpu']", ...); "" for none."""
        if self.minimum is not None:
            unit = f" {self.unit}" if self.unit else ""
            return f"in [{number_text(self.minimum)}, {number_text(self.maximum)}]{unit}"
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.required:
            return "required"
        return ""

    def summary(self) -> str:
        """The description and whether it can change at runtime: what ``ros2 param describe`` and replay's
        ``--help`` show, beside :meth:`rule` (which holds the unit)."""
        return f"{self.description}; changeable at runtime" if self.changeable else self.description

    def check(self, value):
        """``value`` as this setting holds it (an int given for a float becomes a float, a list a tuple), if it
        is of the right type, finite, in range and one of the choices; otherwise a one-line ValueError that names
        the parameter and the rule."""
        value = self._typed(value)
        if self.type is float and not math.isfinite(value):
            raise ValueError(f"parameter {self.name!r} must be a finite number, got {value}")
        if self.required and not value:
            raise ValueError(f"parameter {self.name!r} is required: {self.description}")
        if self.choices and value not in self.choices:
            raise ValueError(f"parameter {self.name!r} must be one of {list(self.choices)}, got {value!r}")
        if self.minimum is not None and not self.minimum <= value <= self.maximum:
            raise ValueError(f"parameter {self.name!r} must be {self.rule()}, got {value}")
        return value

    def _typed(self, value):
        if self.type is tuple:
            return string_list(self.name, value)
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"parameter {self.name!r} must be a bool, got {value!r}")
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"parameter {self.name!r} must be an integer, got {value!r}")
            return value
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"parameter {self.name!r} must be a number, got {value!r}")
            return float(value)
        if not isinstance(value, str):
            raise ValueError(f"parameter {self.name!r} must be a string, got {value!r}")
        return value


def number_text(value: int | float) -> str:
    """A bound as people write it: 10000000, 0.01, 3600 (not 1e+07 or 3600.0)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def setting(default, description: str, *, unit: str = "", minimum: float | None = None,
            maximum: float | None = None, choices: tuple[str, ...] = (), changeable: bool = False,
            required: bool = False):
    """A settings dataclass field with its schema entry (a :class:`Setting` named after the field)."""
    entry = dict(description=description, unit=unit, minimum=minimum, maximum=maximum, choices=tuple(choices),
                 changeable=changeable, required=required)
    return field(default=default, metadata={SCHEMA_METADATA: entry})


ANNOTATIONS = {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple[str, ...]"}
"""The annotation a settings field of each type carries (checked by :meth:`Settings.schema`)."""


class Settings:
    """What every settings dataclass offers: its schema, its defaults as ROS declares them, and building and
    checking it from a {name: value} dict of parameter values."""

    @classmethod
    def schema(cls) -> tuple[Setting, ...]:
        """One :class:`Setting` per field, in declaration order; a TypeError for a field whose annotation is not
        its default's type (``score_threshold: float = setting(0, ...)`` would be an int setting)."""
        entries = []
        for item in fields(cls):
            entry = Setting(name=item.name, default=item.default, **item.metadata[SCHEMA_METADATA])
            if item.type != ANNOTATIONS.get(entry.type):
                raise TypeError(f"{cls.__name__}.{item.name}: annotated {item.type}, default of type "
                                f"{entry.type.__name__}")
            entries.append(entry)
        return tuple(entries)

    @classmethod
    def names(cls) -> list[str]:
        return [item.name for item in fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        """Name -> default value as declared to ROS (string arrays as lists)."""
        return {entry.name: list(entry.default) if entry.type is tuple else entry.default for entry in cls.schema()}

    @classmethod
    def with_values(cls, values: Mapping[str, object]):
        """The defaults with ``values`` (a {name: value} dict), each checked by its :class:`Setting`; unknown names
        are an error. Rules between settings are :meth:`validated`'s."""
        schema = {entry.name: entry for entry in cls.schema()}
        unknown = sorted(set(values) - set(schema))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {list(schema)}")
        return replace(cls(), **{name: schema[name].check(value) for name, value in values.items()})

    def checked(self):
        """A copy with every value checked (and converted) by its :class:`Setting`; the first bad one is a
        ValueError."""
        return replace(self, **{entry.name: entry.check(getattr(self, entry.name)) for entry in self.schema()})


@dataclass(frozen=True)
class RuntimeSettings(Settings):
    """How a sweep is labelled: the settings the node and replay share, each declared once (see the module)."""

    checkpoint: str = setting("", "path of the trained checkpoint (.pt)", required=True)
    device: str = setting("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    sparse_backend: str = setting(
        "auto", "sparse-convolution kernels: 'auto' (torchsparse on CUDA when installed, else native), 'native', "
        "'batched' (native with each convolution's matmuls in one call, for GPUs) or 'torchsparse'",
        choices=SPARSE_BACKENDS)
    vocabulary: tuple[str, ...] = setting(
        (), "class names to segment; empty: the checkpoint's. Names not in the checkpoint need the CLIP text "
        "encoder (clip_model / clip_weights)", changeable=True)
    score_threshold: float = setting(
        0.0, "points whose class probability is below this are labelled ignored (65535)", minimum=0.0,
        maximum=1.0, changeable=True)
    max_points: int = setting(
        0, "at most this many points per sweep go into the network (0: no limit); the others take the result of "
        "their (or a neighbouring) voxel", unit="points", minimum=0, maximum=MAX_POINTS_LIMIT)
    calibration_bias: float = setting(
        0.0, "lowers the classes seen in training, for zero-shot use", unit="cosine",
        minimum=-MAX_CALIBRATION_BIAS, maximum=MAX_CALIBRATION_BIAS, changeable=True)
    use_cameras: bool = setting(
        False, "fuse CLIP's 2D predictions for the points the cameras see (needs camera_topics and CLIP)")
    fusion_weight: float = setting(
        0.5, "weight w of the 2D probabilities: p = (1 - w) p3d + w p2d on camera-seen points", minimum=0.0,
        maximum=1.0, changeable=True)
    clip_model: str = setting(
        "", "open_clip model of the runtime text encoder and camera teacher; empty: the checkpoint's")
    clip_weights: str = setting(
        "", "its weights: a local file or an open_clip tag in the Hugging Face cache; empty: the checkpoint's tag "
        "(never downloaded)")
    clip_quick_gelu: bool = setting(
        False, "true for OpenAI-trained CLIP weights given as a file (registry tags know their own)")
    precision: str = setting(
        "fp32", "the network's precision: bf16 / fp16 autocast, the classifier stays fp32 (fp16 for GPUs only: "
        "very slow on CPUs)", choices=PRECISIONS)
    num_threads: int = setting(
        0, "CPU threads for torch's operators (0: half the cores, at least 1: the robot's other processes keep "
        "the rest)", unit="threads", minimum=0, maximum=MAX_THREADS)
    cpu_matmul: str = setting(
        "auto", "where a CPU convolution's large float32 matmuls run, for the whole process: 'auto' (oneDNN on a "
        "non-Intel CPU with AVX-512, else MKL), 'onednn' or 'mkl'", choices=CPU_MATMULS)

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> RuntimeSettings:
        """Build and validate from a {name: value} dict (ROS parameter values); unknown names are an error."""
        return cls.with_values(values).validated()

    def validated(self) -> RuntimeSettings:
        """A copy with every value checked by the schema, and a device that exists here; else a ValueError
        naming the setting and the rule."""
        settings = self.checked()
        resolve_device(settings.device)
        return settings

    def threads(self) -> int:
        """The torch intra-op thread count these settings ask for (``num_threads``, 0: half the cores)."""
        return self.num_threads or default_threads()


RUNTIME_SCHEMA: tuple[Setting, ...] = RuntimeSettings.schema()
"""The runtime settings' schema, one entry per field of :class:`RuntimeSettings`."""

RUNTIME_PARAMETERS = tuple(entry.name for entry in RUNTIME_SCHEMA if entry.changeable)
"""The settings that can change while sweeps are being labelled; the others are read once at start-up."""


def default_threads() -> int:
    """Half the CPU cores this process may use, at least 1. torch's own default (all of them) oversubscribes a
    robot's CPU, which the node shares with the robot's other processes: a busy core slows every thread of a
    parallel operator to its pace (measured in docs/benchmarks.md, "Threads on a shared CPU")."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def string_list(name: str, value) -> tuple[str, ...]:
    """A string-array parameter's value as a tuple; None or an empty list of any type is ``()``."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"parameter {name!r} must be a list of strings, got {value!r}")
    items = list(value)
    if not items:
        return ()
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"parameter {name!r} must be a list of strings, got {items!r}")
    return tuple(items)


def convert_value(name: str, value, default=None):
    """``value`` checked by runtime setting ``name``'s schema entry (:meth:`Setting.check`: type, finite, range,
    choices). ``default`` is not used any more (the schema knows the type); it stays while
    :meth:`~clip_seg3d_ros.runtime.runtime.SegmentRuntime.apply` passes it."""
    entries = {entry.name: entry for entry in RUNTIME_SCHEMA}
    if name not in entries:
        raise ValueError(f"unknown parameter {name!r}; known: {list(entries)}")
    return entries[name].check(value)


def check_unit_interval(name: str, value: float) -> float:
    """``value`` as a float if it lies in [0, 1] (the one range check of thresholds and weights)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"parameter {name!r} must be in [0, 1], got {value}")
    return value


def split_clip_model(spec: str) -> tuple[str, str]:
    """``"ViT-B-16/openai"`` -> ("ViT-B-16", "openai"): a checkpoint's ``clip_model`` as (model name, weights).

    The weights part may itself contain slashes (a file path); either part may be empty.
    """
    model, _, weights = spec.strip().partition("/")
    return model, weights
