"""The CLI prints an error's text as it is: rich markup in a file name or a shape is not markup."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("name", ["clip[red].mp4", "clip[/].mp4", "take[n_latent, 512].mp4"])
def test_error_naming_a_file_with_brackets_is_printed_verbatim(tmp_path, capsys, name):
    """rich read `[red]` as a style (the name was printed as `clip.mp4`) and `[/]` as a closing tag
    with nothing to close (a MarkupError traceback instead of the one-line error)."""
    from fsvideo.cli import main
    missing = tmp_path / name
    with pytest.raises(SystemExit) as ei:
        main(["edit", str(missing), "--attr", "smile", "-o", str(tmp_path / "out.mp4")])
    assert ei.value.code == 2
    err = "".join(capsys.readouterr().err.split("\n"))
    assert err.startswith("error: ") and name in err, err


def test_usage_error_with_brackets_is_printed_verbatim(capsys):
    """A click usage error quotes the bad value; a `[/]` in it must not become a rich tag."""
    from fsvideo.cli import main
    with pytest.raises(SystemExit) as ei:
        main(["edit", "x.mp4", "--crf", "[/]"])
    assert ei.value.code == 2
    assert "'[/]'" in capsys.readouterr().err
