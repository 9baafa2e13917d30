"""``python -m deepfeat.cli``: the same as the ``deepfeat`` command."""
from deepfeat.cli import main

main()
