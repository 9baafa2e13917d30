"""How every deepfeat report is written: the Jinja2 environment over ``deepfeat/reporting/templates``, the numbers
and tables the templates show, atomic files and the completion marker.

The cross-validation report (:mod:`deepfeat.reporting.report`), the few-shot and learning-curve reports
(:mod:`deepfeat.reporting.fewshot_report`) and the fine-tuning report (:mod:`deepfeat.reporting.finetune_report`)
share it, so they share the page style and macros, HTML escaping (autoescape for ``*.html.j2``; every expression of
a ``*.md.j2`` through :func:`md_escape`, so no data-derived name carries HTML into ``report.md``), formula-safe CSVs
(:func:`deepfeat.fileio.write_csv`) and files that are written to a temporary name and renamed (a reader, or a
run killed half-way, never sees half a file). A report folder of its own is opened with :func:`start_report` and
closed with :func:`finish_report`; :func:`check_report` tells a finished folder from an interrupted one.
"""
from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np

from deepfeat.errors import DeepfeatError
from deepfeat.fileio import atomic_write_bytes, sha256_file

__all__ = ["COMPLETE_MARKER", "DASH", "TEMPLATES", "check_report", "finish_report", "fmt_number", "md_escape",
           "render", "start_report", "table_block", "unfinished_reports", "write_json", "write_text"]

TEMPLATES = Path(__file__).parent / "templates"
DASH = "—"
#: Written last; a folder without it (or whose files differ from it) is an unfinished report.
COMPLETE_MARKER = "report.complete.json"


def fmt_probability(p) -> str:
    """THE rounding rule for a probability (p-value, P(better), P(practically equivalent), ...) in every report:
    three decimals, and never rounded to a certainty: below 0.001 is ``"< 0.001"``, above 0.999 ``"> 0.999"``;
    missing is an em dash.

    Examples
    --------
    >>> fmt_probability(0.0196), fmt_probability(0.9962), fmt_probability(0.99996), fmt_probability(0.0)
    ('0.020', '0.996', '> 0.999', '< 0.001')
    """
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return DASH
    p = float(p)
    if p < 0.001:
        return "< 0.001"
    if p > 0.999:
        return "> 0.999"
    return f"{p:.3f}"


def probability_relation(p) -> str:
    """``"= 0.020"`` or ``"< 0.001"``: :func:`fmt_probability` after a name (``p = 0.020``, ``P(better) > 0.999``).

    >>> "p " + probability_relation(0.0196), "p " + probability_relation(1e-9)
    ('p = 0.020', 'p < 0.001')
    """
    shown = fmt_probability(p)
    return shown if shown[0] in "<>" else f"= {shown}"


def fmt_number(x, digits: int = 2) -> str:
    """A number as a reader wants it: whole numbers without ``.0``, missing values as an em dash.

    Examples
    --------
    >>> fmt_number(1000.0), fmt_number(float("nan")), fmt_number(0.12345, 3), fmt_number(None)
    ('1000', '—', '0.123', '—')
    """
    if x is None or isinstance(x, str):
        return DASH if x is None else x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    x = float(x)
    if math.isnan(x):
        return DASH
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.{digits}f}"


def table_block(df, *, title: str, key: str, open_: bool = False, note: str = "") -> dict:
    """A table for the templates' ``table`` macros: column names and rows of formatted strings (numbers through
    :func:`fmt_number`), with the ``key`` (HTML id), ``title``, ``note`` and whether it starts ``open_``."""
    rows = [[fmt_number(v) if not isinstance(v, str) else v for v in row] for row in df.itertuples(index=False)]
    return {"key": key, "title": title, "columns": [str(c) for c in df.columns], "rows": rows, "open": open_,
            "note": note, "n_rows": len(rows)}


#: A Markdown inline link to a script / data URL (``[x](javascript:...)``): the ``(`` is escaped so it reads as text.
_MD_SCRIPT_LINK = re.compile(r"\](\s*)\((?=\s*<?\s*(?:javascript|vbscript|data|file):)", re.IGNORECASE)
_MD_ENTITY = re.compile(r"&(?!(?:amp|lt|gt|#\d+);)")


def md_escape(value) -> str:
    """``value`` as Markdown text that carries no HTML: ``&``, ``<`` and ``>`` become entities.

    Every ``{{ ... }}`` of a Markdown template goes through it (the environment's ``finalize``), so a class, file or
    configuration name such as ``<script>`` or ``<img onerror=...>`` reads as text in every Markdown viewer, also
    one that passes HTML through; a Markdown link to a ``javascript:`` / ``vbscript:`` / ``data:`` / ``file:`` URL
    in a name loses its link syntax (``](`` becomes ``]\\(``). Markdown itself (``**``, ``|``, the https links the
    templates write) is untouched. It is idempotent (a macro's already escaped output is not escaped twice).

    Examples
    --------
    >>> md_escape("<img src=x onerror=alert(1)> & co")
    '&lt;img src=x onerror=alert(1)&gt; &amp; co'
    >>> md_escape("[blast](javascript:alert(1))")
    '[blast]\\\\(javascript:alert(1))'
    >>> md_escape(md_escape("a < b")) == md_escape("a < b")
    True
    """
    text = _MD_ENTITY.sub("&amp;", str(value))
    text = _MD_SCRIPT_LINK.sub(lambda m: "]" + m.group(1) + "\\(", text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _environment(markdown: bool = False):
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    # HTML pages: Jinja2's autoescape; Markdown pages: md_escape on every expression (an environment of their own,
    # so nothing is escaped twice)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
                      finalize=md_escape if markdown else None,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = fmt_number
    env.filters["md_cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    env.filters["b64png"] = lambda png: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return env


def render(template: str, **context) -> str:
    """Render one of the package's templates (``report.html.j2``, ``report.md.j2``, ...) with ``context``."""
    return _environment(markdown=template.endswith(".md.j2")).get_template(template).render(**context)


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=False)


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy arrays and scalars as lists and numbers, anything else
    as its ``str``): a report's ``config.json``."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default))


def start_report(out: Path, files, folders=()) -> None:
    """Open report folder ``out``: remove the completion marker first, then the previous report's ``files`` and
    ``folders`` (a rerun replaces a report, it does not merge into it).

    Other files in the folder (an experiment's features.npz, finetuned.pt, demo images) are left alone.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPLETE_MARKER).unlink(missing_ok=True)  # first: from now on the folder reads as unfinished
    removed = [n for n in files if (out / n).is_file()] + [f"{n}/" for n in folders if (out / n).is_dir()]
    _OPEN[out.resolve()] = removed
    for name in files:
        (out / name).unlink(missing_ok=True)
    for name in folders:
        shutil.rmtree(out / name, ignore_errors=True)


#: report folders opened by start_report in this process and not finished yet -> the previous report's files removed
_OPEN: dict[Path, list[str]] = {}


def unfinished_reports(*, forget: bool = False) -> dict[Path, list[str]]:
    """The report folders this process opened and did not finish, each with the previous report's files that
    opening it removed: what a failed run must say it lost (the command line says it with its error line).
    ``forget=True`` also empties the record (a new command begins)."""
    found = dict(_OPEN)
    if forget:
        _OPEN.clear()
    return found


def finish_report(out: Path, paths: dict) -> Path:
    """Write the completion marker: every report file (``paths``' values) with its sha256."""
    files = {p.relative_to(out).as_posix(): sha256_file(p) for p in paths.values()}
    marker = out / COMPLETE_MARKER
    atomic_write_bytes(marker, json.dumps({"complete": True, "files": files}, indent=1).encode())
    _OPEN.pop(out.resolve(), None)
    return marker


def check_report(out_dir) -> dict:
    """The marker of a finished report folder; :class:`DeepfeatError` when it is unfinished or was changed.

    An interrupted ``deepfeat cv`` (or ``fewshot``, ``curve``) leaves files without the marker: this tells such a
    folder from a finished one.
    """
    out = Path(out_dir)
    try:
        marker = json.loads((out / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        raise DeepfeatError(f"report folder {out} is unfinished (no valid {COMPLETE_MARKER}): the run that wrote it "
                            "was interrupted or failed; run it again") from None
    changed = [f for f, sha in marker.get("files", {}).items()
               if not (out / f).is_file() or sha256_file(out / f) != sha]
    if changed:
        raise DeepfeatError(f"report folder {out}: {len(changed)} file(s) missing or changed since the report was "
                            f"finished (e.g. {changed[0]}); run it again")
    return marker
