"""The offline training pipeline: CLIP-guided training, self-training, evaluation and reports."""
