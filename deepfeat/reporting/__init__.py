"""Reporting: the CV report (``report``), its verdict (``verdict``), the statistics sections (``stats``), plots
(``plots``), the image gallery (``gallery``), the fine-tune and few-shot / learning-curve reports, all written by
``writing`` (the one Jinja2 environment over ``templates/``, atomic files, the completion marker) with their CSVs
through :func:`deepfeat.fileio.write_csv`. Nothing that measures imports this package."""
