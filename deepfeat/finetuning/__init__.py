"""Fine-tuning a backbone: configuration and run (``run``), the training loop (``training``), checkpoints and the
train/validation split (``splits``)."""
