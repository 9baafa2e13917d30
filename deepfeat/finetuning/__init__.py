"""Fine-tuning a backbone: configuration and run (``run``), the training loop (``training``), checkpoints and the
train/validation split (``splits``)."""

from deepfeat.lazy import lazy_exports

# public name -> module that defines it; imported on first use (keeps this package's import cheap)
_PUBLIC = {
    "finetune": "deepfeat.finetuning.run",
    "FinetuneConfig": "deepfeat.finetuning.run",
    "FinetuneResult": "deepfeat.finetuning.run",
    "load_finetuned": "deepfeat.finetuning.run",
    "read_checkpoint": "deepfeat.finetuning.run",
    "split_train_val": "deepfeat.finetuning.run",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
