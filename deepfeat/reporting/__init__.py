"""Reporting: the CV report (``report``), its verdict (``verdict``), the statistics sections (``stats``), plots
(``plots``), the image gallery (``gallery``), the fine-tune and few-shot / learning-curve reports, all written by
``writing`` (the one Jinja2 environment over ``templates/``, atomic files, the completion marker) with their CSVs
through :func:`deepfeat.fileio.write_csv`. Nothing that measures imports this package."""

from deepfeat.lazy import lazy_exports

# public name -> module that defines it; imported on first use (keeps this package's import cheap)
_PUBLIC = {
    "write_report": "deepfeat.reporting.report",
    "check_report": "deepfeat.reporting.writing",
    "fmt_probability": "deepfeat.reporting.writing",
    "build_verdict": "deepfeat.reporting.verdict",
    "write_fewshot_report": "deepfeat.reporting.fewshot_report",
    "write_curve_report": "deepfeat.reporting.fewshot_report",
    "write_finetune_report": "deepfeat.reporting.finetune_report",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
