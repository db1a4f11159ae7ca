"""What the tests expect of a refused command, written once (imported as ``expect``: the
tests folder is on ``sys.path``, as for ``published``)."""

from __future__ import annotations


def one_error(result: tuple[int, str, str], *needles: str) -> str:
    """``result`` (exit code, stdout, stderr) is a refusal as users see it: exit status 2 and
    one ``error: ...`` line on stderr holding every needle, no traceback. Returns the line."""
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
