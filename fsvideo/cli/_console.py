"""The one rich Console of the CLI (stdout) and its twin for errors (stderr)."""
from rich.console import Console

console = Console()
err_console = Console(stderr=True)
