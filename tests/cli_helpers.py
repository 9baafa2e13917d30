"""Running the ``deepfeat`` command line inside a test: exit code, stdout and stderr."""
from __future__ import annotations

import pytest

from deepfeat.cli import main


def run(capsys, *argv):
    """``deepfeat ARGV...`` in-process; returns ``(exit code, stdout, stderr)``. Arguments may be paths."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err
