#!/usr/bin/env bash
# Here, before a run on the lent GPU machine (README "Results and benchmarks"): fills the git-ignored
# .whl/ (the wheels that machine lacks, for its Python 3.12) and .device/ (the clips the runs read and
# dlib's faces recorded on them: that machine has neither ../shared nor dlib), then checks that both
# stay under the 64 MiB a run may carry.  Needs this project's environment (dlib) and PyPI.
#   bash benchmarks/device_prepare.sh            # PYTHON=... to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
rm -rf .whl .device
mkdir -p .whl
# the carried packages, at the versions installed here (av: the same FFmpeg decodes the same pixels there)
for name in $("$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import device_run; print(*device_run.CARRIED)"); do
  version=$("$PY" -c "from importlib.metadata import version; print(version('$name'))")
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version"
done
"$PY" benchmarks/device_run.py prepare
ls -l .whl .device
size=$(du -scm .whl .device | tail -1 | cut -f1)
tracked=$(git ls-files -z | du -cm --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "carried: ${size} MiB (.whl + .device); tracked files: ${tracked} MiB; limit 64 MiB in all"
[ $((size + tracked)) -lt 64 ] || { echo "too big to carry: trim device_run.CARRIED or MEDIA" >&2; exit 1; }
