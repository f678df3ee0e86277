"""Running ``ltx-ane`` in-process from tests, and the one-line-error contract every command keeps."""

from __future__ import annotations

from ltx_ane.cli.main import main


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``ltx-ane ARGV``; arguments may be paths or numbers."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def expect_error(capsys, argv, needle, outputs=()):
    """A non-zero exit with one line on stderr that holds ``needle``, and none of ``outputs`` (nor a temporary
    sibling of one) left behind."""
    code, _, err = run_cli(capsys, *argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    for path in outputs:
        assert not path.exists()
        assert not list(path.parent.glob(f".{path.name}*"))
