"""Stage 2, images -> features: the torch-free front with its all-cached fast path (``api``), the torch engine
(``engine``), the on-disk cache (``cache``), preprocessing and datasets (``preprocessing``) and the one
device / precision resolver (``device``). Importing this package imports no torch."""
