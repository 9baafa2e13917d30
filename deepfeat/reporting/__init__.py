"""Reporting: the CV report (``report``), its verdict (``verdict``), the statistics text (``stats``), plots
(``plots``), the image gallery (``gallery``), the fine-tune and few-shot reports, all rendered from the Jinja2
templates in ``templates/`` and written through :func:`deepfeat.fileio.write_csv`. Nothing that measures imports
this package."""
