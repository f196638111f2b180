"""The one way both nodes run as processes: start rclpy, build the node, spin, and always clean up.

A node that cannot start (an unusable checkpoint or parameter) is one FATAL log line and exit code 1; SIGINT
(Ctrl-C, ``ros2 launch`` stopping) or SIGTERM ends the spin quietly with exit code 0; either way the node's
``close()`` runs (the segmentation node finishes the sweep in flight and frees its model, the evaluator writes
its report) BEFORE rclpy shuts down. That order is why rclpy's own signal handler is off: it would invalidate
the context at once, and a sweep in flight would fail to publish ("publisher's context is invalid").
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Protocol

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.signals import SignalHandlerOptions

from clip_seg3d_ros.checkpoint import CheckpointError


class ClosableNode(Protocol):
    def close(self) -> None: ...

    def destroy_node(self) -> None: ...


def run_node(name: str, make_node: Callable[[], ClosableNode], spin: Callable[[ClosableNode], None],
             args: list[str] | None = None) -> int:
    """Run ``make_node()`` with ``spin(node)`` until it returns, Ctrl-C or shutdown; the process's exit code."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Both end the spin as KeyboardInterrupt in this thread. Set explicitly: a process started in the background
    # of a non-interactive shell inherits SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    try:
        node = make_node()
        spin(node)
    except (CheckpointError, ValueError) as error:
        get_logger(name).fatal(f"cannot start: {error}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
