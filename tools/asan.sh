#!/usr/bin/env bash
# Build the engine with AddressSanitizer and UndefinedBehaviorSanitizer and run the core
# and large-image tests against that build. Linux with gcc; uses the Python of $PYTHON
# (default: python3) with the test dependencies installed. The repository is copied to a temporary directory
# and built there, so the in-tree build is left alone.
#
#   tools/asan.sh                      # tests/core, tests/large and tests/fuzz
#   tools/asan.sh -k kernels           # extra arguments go to pytest
set -euo pipefail
PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git -C "$ROOT" ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK" 2>/dev/null || true)
cd "$WORK"
# -O1 keeps stack traces readable; OpenMP stays on (the threads are part of what is checked).
export CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"
export LDFLAGS="-fsanitize=address,undefined"
"$PYTHON" setup.py -q build_ext --inplace
# Python itself is not instrumented: the runtime is preloaded; CPython's own allocations
# are not leak-checked (they are not this package's).
LIBASAN=$(gcc -print-file-name=libasan.so)
LIBUBSAN=$(gcc -print-file-name=libubsan.so)
export LD_PRELOAD="$LIBASAN $LIBUBSAN"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
PYTHONPATH=src "$PYTHON" -c "import sys; sys.path.insert(0, 'src'); from napari_kmeans_vq.core import engine_info; i = engine_info(); print(i); assert i['sanitizers'], 'not an ASan build'"
PYTHONPATH=src "$PYTHON" -m pytest -q -p no:cacheprovider -W ignore tests/core tests/large tests/fuzz "$@"
echo "tools/asan.sh: the core and large-image tests and the readers' fuzz run passed under AddressSanitizer and UBSan"
