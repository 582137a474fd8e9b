"""The one rich Console of the CLI (stdout) and its twin for errors (stderr).

Emoji codes are off: messages name files and config keys, and rich would turn ``tiny.yaml:train:``
or a file called ``a:smile:.mp4`` into emoji.
"""
from rich.console import Console

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)
