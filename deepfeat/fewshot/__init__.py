"""Few-shot evaluation: N-way K-shot episodes (``episodes``), their evaluation (``evaluate``) and learning curves
(``curves``)."""
