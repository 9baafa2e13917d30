"""What the commands share on the way in: help texts, thin parsers from option text to library values, and the
options typed on the command line. Parsing only: the library checks every value (one check per parameter)."""
from __future__ import annotations

import warnings
from enum import Enum
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.errors import DeepfeatError

PROGRESS_HELP = "Show progress bars and decisions on stderr (--quiet: only results and errors)."
SCHEDULER_HELP = ("Run on Dask (pip install \"deepfeat[dask]\"): local:N (N worker processes here) or a scheduler "
                  "address tcp://HOST:8786.")
N_FEATURES_HELP = "Features kept by mRMR: an int, or auto = the study's 521 of 1000 (half the features when fewer)."

# options of the commands that load a model file and read images (predict, explain)
AllowVersionMismatch = Annotated[bool, typer.Option(help="Load a model saved with other library versions anyway.")]
TrustModel = Annotated[bool, typer.Option("--trust", help="Load a .joblib model that this deepfeat install did not "
                                                          "write (a pickle: it runs code). .skops files never need "
                                                          "it.")]
MaxPixels = Annotated[Optional[int], typer.Option(min=1, help="Refuse images declaring more pixels than this "
                                                              "(default: Pillow's 89,478,485; a guard against "
                                                              "decompression bombs).")]

# the mRMR variants, from the table of defaults (typer shows them as the option's choices)
MRMRMethod = Enum("MRMRMethod", {name: name for name in defaults.MRMR_METHODS}, type=str)


def comma_list(values) -> str:
    """A default sequence as the comma list a user types: ``(2, 5, "all")`` -> ``"2,5,all"``."""
    return ",".join(map(str, values))


def int_or_auto(text):
    """``auto`` or an int, forwarded (--n-features, --n-jobs); the library checks the value."""
    if text is None or text == "auto" or isinstance(text, int):
        return text
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"an int or 'auto'; got {text!r}") from None


N_JOBS_HELP = ("Worker processes for the folds: auto (one per core when the features hold >= 1e6 values, else 1) or "
               "an int (-1 = every core). Results do not depend on it.")


def word_or_number(text):
    """A typed "auto" / "true" / "false" / number as the library wants it (None = not given)."""
    if text is None:
        return None
    low = str(text).strip().lower()
    if low in ("true", "false"):
        return low == "true"
    return int(low) if low.isdigit() else low


def fold_cache_value(text):
    """--fold-cache: a folder, or ``none`` = no fold cache (False for the library)."""
    return False if isinstance(text, str) and text.lower() == "none" else text


def was_typed(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default)."""
    # by name: typer may carry its own copy of click's ParameterSource enum
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")


def typed_options(ctx: typer.Context, names: dict[str, str]) -> dict:
    """The options typed on the command line, as ``{library name: value}`` (``names``: CLI name -> library name;
    a choice as its string). The library applies its defaults and an experiment file's table under them."""
    values = {lib: ctx.params[cli] for cli, lib in names.items() if was_typed(ctx, cli)}
    return {k: v.value if isinstance(v, Enum) else v for k, v in values.items()}


def renamed_option(ctx: typer.Context, old: str, new: str):
    """The value of option ``new``, or of its 0.2 spelling ``old`` when that was typed (a FutureWarning)."""
    if not was_typed(ctx, old):
        return ctx.params[new]
    flag_old, flag_new = (f"--{n.replace('_', '-')}" for n in (old, new))
    if was_typed(ctx, new):
        raise DeepfeatError(f"give {flag_new} only; {flag_old} is its 0.2 name")
    warnings.warn(f"{flag_old} is renamed {flag_new}; {flag_old} keeps working in deepfeat 0.3 and goes in 0.4",
                  FutureWarning, stacklevel=2)
    return ctx.params[old]


def set_max_pixels(max_pixels) -> None:
    """--max-pixels for this run, decoding worker processes included (they inherit the environment)."""
    if max_pixels is not None:
        import os

        from deepfeat.data.images import MAX_PIXELS_ENV

        os.environ[MAX_PIXELS_ENV] = str(int(max_pixels))
