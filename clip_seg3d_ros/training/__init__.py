"""The offline training pipeline, a module per capability; ``training/train.py`` is its command line.

- :mod:`~clip_seg3d_ros.training.loop`: ``train(config, out_dir, resume=False)``, a run top to bottom, and its
  phases;
- :mod:`~clip_seg3d_ros.training.config`: every setting of a run, typed, with ``--set key=value`` overrides;
- :mod:`~clip_seg3d_ros.training.data`: sweeps, the CLIP teacher's features and pseudo labels per sweep;
- :mod:`~clip_seg3d_ros.training.losses`: one sweep's losses and each loss's formula;
- :mod:`~clip_seg3d_ros.training.schedule`: the order of the sweeps, the learning rate, the self-training rounds;
- :mod:`~clip_seg3d_ros.training.self_training`: the labels the model gives itself (made, saved, read; the rules);
- :mod:`~clip_seg3d_ros.training.checkpoints`: last.pt and model.pt, resuming;
- :mod:`~clip_seg3d_ros.training.validation`: the model or a checkpoint on the validation split;
- :mod:`~clip_seg3d_ros.training.distributed`: one process or many under torchrun.
"""
