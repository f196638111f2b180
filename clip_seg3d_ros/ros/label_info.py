"""``vision_msgs/LabelInfo`` <-> class names: what the ``label`` values of the segmenter's output mean.

The node publishes its class list as a LabelInfo (``class_map``: one ``VisionClass`` (class_id, class_name)
per class; ``threshold``: the score threshold) on a transient-local topic, the vision_msgs convention for
a pipeline's label map, and again whenever the vocabulary changes at runtime. Consumers (the evaluate node,
RViz plugins, logging) read the names from it instead of assuming the checkpoint's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def label_info_fields(class_names: Sequence[str], threshold: float, vision_class: Callable[..., Any]) -> dict:
    """The LabelInfo fields (but the header): ``class_map`` built with ``vision_class`` (the VisionClass type)."""
    return {
        "class_map": [vision_class(class_id=index, class_name=str(name)) for index, name in enumerate(class_names)],
        "threshold": float(threshold),
    }


def class_names_from_label_info(msg) -> list[str]:
    """Class names by label value 0..C-1; a LabelInfo whose ids are not exactly 0..C-1 is a ValueError."""
    entries = sorted((int(item.class_id), str(item.class_name)) for item in msg.class_map)
    ids = [class_id for class_id, _ in entries]
    if ids != list(range(len(ids))):
        raise ValueError(f"LabelInfo class ids must be 0..{len(ids) - 1}, got {ids}")
    return [name for _, name in entries]
