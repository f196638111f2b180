"""``make ros-demo``: the robot side end to end, under the pip-installed ROS 2, on one machine.

1. writes a synthetic bag (``to_bag``; scenes of another world seed than training's),
2. replays it without ROS through the node's runtime (the reference metrics),
3. starts the segmentation node (console script ``segment``, ``config/segment.yaml``, the demo model) and the
   evaluate node, and plays the bag into them (``clip_seg3d_ros.tools.play_bag`` in lockstep: the next sweep
   once the node's output for this one came back, so that a CPU labels every sweep; a sweep lost on the way is
   sent again and counted),
4. prints the evaluate node's metrics next to replay's, and the node's per-stage latency.

Run it inside a network namespace with only loopback (``make ros-demo`` does): DDS stays on this machine. The
node's input is made reliable here (``qos_overrides``): a 64-beam cloud is megabytes, which Fast DDS's default
transports mostly lose over best effort (docs/ros.md, QoS). This module starts processes only; it imports no ROS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clip_seg3d_ros.evaluation.summary import format_metrics_table
from clip_seg3d_ros.tools import replay, to_bag

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sys.executable).parent
INPUT = "/clip_seg3d_node/input/points"
OUTPUT = "/clip_seg3d_node/output/points"
METRICS = ("miou", "miou_seen", "miou_unseen", "hiou")


def ros_arguments(parameters: dict) -> list[str]:
    arguments = []
    for name, value in parameters.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        arguments += ["-p", f"{name}:={text}"]
    return arguments


def start(command: list[str], log: Path) -> tuple[subprocess.Popen, object]:
    handle = open(log, "w")  # noqa: SIM115  (closed by stop())
    environment = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment, cwd=REPO_ROOT), handle


def stop(process: subprocess.Popen, handle, timeout: float = 60.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    handle.close()
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "runs" / "demo" / "model.pt")
    parser.add_argument("--out", type=Path, default=Path("runs/ros_demo"))
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=100, help="synthetic world seed of the bag (training used 0)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed between sweeps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the evaluation at most")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"error: no model at {args.checkpoint}: train it with `make demo` (or pass --checkpoint)",
              file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    bag = args.out / "synthetic_bag"
    if not bag.exists():
        print(f"writing {args.scenes} synthetic sweeps to {bag} ...")
        if to_bag.main(["--dataset", "synthetic", "--scenes", str(args.scenes), "--seed", str(args.seed),
                        "--no-images", "--out", str(bag)]) != 0:
            return 1
    print("replaying the bag without ROS (the reference) ...")
    if replay.main([str(bag), "--checkpoint", str(args.checkpoint), "--device", args.device, "--no-progress",
                    "--metrics", str(args.out / "replay_metrics.json")]) != 0:
        return 1

    reliable = {f"qos_overrides.{INPUT}.subscription.reliability": "reliable"}
    segment, segment_log = start([str(SCRIPTS / "segment"), "--ros-args", "--params-file",
                                  str(REPO_ROOT / "config" / "segment.yaml"),
                                  *ros_arguments({"checkpoint": args.checkpoint, "device": args.device, **reliable})],
                                 args.out / "segment.log")
    evaluate, evaluate_log = start([str(SCRIPTS / "evaluate"), "--ros-args", *ros_arguments({
        "checkpoint": args.checkpoint, "max_sweeps": args.scenes, "output": args.out / "ros_metrics.json",
        **{f"qos_overrides.{topic}.subscription.reliability": "reliable" for topic in ("/points_gt", OUTPUT)}})],
        args.out / "evaluate.log")
    # The evaluator pairs a prediction and its ground truth by stamp, whichever comes first.
    player, player_log = start([sys.executable, "-m", "clip_seg3d_ros.tools.play_bag", str(bag), "--topics",
                                "/points_gt", "/points", "--rate", str(args.rate), "--wait-for", INPUT, "/points_gt",
                                "--lockstep", "/points", OUTPUT, "--ros-args", "-r", f"/points:={INPUT}"],
                               args.out / "play_bag.log")
    print(f"ROS 2: segment + evaluate nodes, the bag played in lockstep (logs in {args.out}) ...")
    try:
        # The evaluator ends by itself after the last sweep; if some sweep never made it, it is stopped a little
        # after the player has finished, and still writes what it evaluated.
        deadline = time.monotonic() + args.timeout
        while evaluate.poll() is None and time.monotonic() < deadline:
            if player.poll() is not None:
                deadline = min(deadline, time.monotonic() + 30.0)
            time.sleep(0.5)
    finally:
        codes = [stop(player, player_log), stop(segment, segment_log), stop(evaluate, evaluate_log)]
    node_summary = [line for line in (args.out / "segment.log").read_text().splitlines() if "processed" in line]
    player_summary = [line for line in (args.out / "play_bag.log").read_text().splitlines() if "published" in line]
    if not (args.out / "ros_metrics.json").is_file():
        print(f"error: the evaluate node wrote no metrics (exit codes {codes}); see {args.out}/*.log",
              file=sys.stderr)
        return 1
    live = json.loads((args.out / "ros_metrics.json").read_text())
    offline = json.loads((args.out / "replay_metrics.json").read_text())
    print("\nthe evaluate node, live under ROS 2:")
    print(format_metrics_table(live, live["seen"]))
    same = all(abs((live[key] or 0) - (offline[key] or 0)) < 1e-6 for key in METRICS)
    print("\nreplay of the same bag, without ROS: " + " | ".join(f"{key} {offline[key]:.1f}" for key in METRICS)
          + ("  (equal)" if same else "  (DIFFERENT)"))
    print("\nthe segmentation node: " + (node_summary[-1].split("]: ", 1)[-1] if node_summary else "no summary"))
    print("the player: " + (player_summary[-1].split("]: ", 1)[-1] if player_summary else "no summary"))
    return 0 if same and codes[1] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
