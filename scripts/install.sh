#!/usr/bin/env bash
# Install mantis's pinned environment into ./.venv (idempotent; a re-run with nothing changed takes
# about a second).
#
#   bash scripts/install.sh            # runtime + Horovod (CPU)
#   bash scripts/install.sh --dev      # also the test tools (pytest, ruff)
#
# Environment knobs:
#   MANTIS_REQUIREMENTS  requirements file for the runtime (default requirements.txt;
#                        requirements-gpu.txt swaps mxnet for mxnet-cu112)
#   MANTIS_PYTHON        interpreter to build the venv with (default: first of python3.11..3.9 found)
#   MANTIS_WHEEL_CACHE   where the Horovod wheel built here is kept for reuse
#                        (default ~/.cache/mantis/wheels; CI starts from fresh clones)
#   HOROVOD_GPU_OPERATIONS=NCCL  build Horovod with NCCL (GPU clusters)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
REQ=${MANTIS_REQUIREMENTS:-requirements.txt}
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
HOROVOD_VERSION=0.28.1
HOROVOD_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0   # the PyPI sdist
# Horovod 0.28.1's MXNet operations hand EnqueueTensorBroadcast a reference to a name that the
# operation's completion (on Horovod's background thread) can free before that call returns: a
# use-after-free that crashes a rank in hvd.broadcast_parameters now and then. The patch passes a copy.
HOROVOD_PATCH=$ROOT/scripts/horovod-0.28.1-mxnet-op-name.patch
CACHE=${MANTIS_WHEEL_CACHE:-$HOME/.cache/mantis/wheels}

say() { printf '[install] %s\n' "$*"; }
start=$(date +%s)

# ------------------------------------------------------------------ 1. an interpreter the pins support
# numpy 1.23.5 has no wheels for Python >= 3.12.
find_python() {
    if [ -n "${MANTIS_PYTHON:-}" ]; then echo "$MANTIS_PYTHON"; return; fi
    for v in 3.11 3.10 3.9; do
        if command -v "python$v" >/dev/null 2>&1 && "python$v" -c 'import venv, ensurepip' 2>/dev/null; then
            echo "python$v"; return
        fi
    done
}
PY=$(find_python)
if [ -z "$PY" ]; then
    say "no Python 3.9-3.11 with venv found: installing Debian's python3.11"
    apt-get update -q && apt-get install -y -q --no-install-recommends python3.11 python3.11-venv python3.11-dev
    PY=python3.11
fi

# ------------------------------------------------------------------ 2. the venv and its stamp
# The stamp holds a hash of everything that decides the install; equal hash = nothing to do.
stamp_inputs() {
    cat "$ROOT"/requirements*.txt "$ROOT/scripts/install.sh" "$HOROVOD_PATCH" "$ROOT"/nn/kernels/*.cc "$ROOT/nn/kernels/__init__.py"
    echo "req=$REQ py=$("$PY" -c 'import sys; print(sys.version)')"
}
want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
# A --dev install is a superset of a plain one, so it satisfies both.
have=$(cat "$VENV/.mantis-stamp" 2>/dev/null || true)
if { [ "$have" = "$want dev" ] || { [ "$DEV" = 0 ] && [ "$have" = "$want" ]; }; } \
   && [ -f "$ROOT/nn/kernels/libmantis_ops.so" ] \
   && "$VENV/bin/python" -c 'import mxnet, horovod.mxnet' 2>/dev/null; then
    say "environment up to date ($VENV)"
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip==24.3.1" "setuptools==75.6.0" "wheel==0.45.1"

# ------------------------------------------------------------------ 3. pinned runtime requirements
say "installing $REQ"
LOCK=(-c "$ROOT/requirements-lock.txt")   # transitive dependencies pinned too
"${PIP[@]}" install -q -r "$ROOT/$REQ" "${LOCK[@]}"
"${PIP[@]}" install -q --no-deps -r "$ROOT/requirements-nodeps.txt" "${LOCK[@]}"
[ "$DEV" = 1 ] && "${PIP[@]}" install -q -r "$ROOT/requirements-dev.txt" "${LOCK[@]}"

# ------------------------------------------------------------------ 4. Horovod with MXNet + Gloo
# Built from the pinned, checksummed sdist with the patch above, against the mxnet above; the wheel
# is cached outside the clone and reused. The tag names the build, so a changed patch rebuilds.
mxv=$("$VENV/bin/python" -c 'import mxnet; print(mxnet.__version__)')
tag="mx${mxv}-${HOROVOD_GPU_OPERATIONS:-cpu}-$("$VENV/bin/python" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
tag="$tag-patch$(sha256sum "$HOROVOD_PATCH" | cut -c1-12)"
if [ "$(cat "$VENV/.horovod-build" 2>/dev/null || true)" != "$tag" ] \
   || ! "$VENV/bin/python" -c 'import horovod.mxnet' 2>/dev/null; then
    mkdir -p "$CACHE"
    wheel_dir="$CACHE/horovod-$HOROVOD_VERSION-$tag"
    if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
        say "building Horovod $HOROVOD_VERSION with MXNet + Gloo (a few minutes; cached in $wheel_dir)"
        tmp=$(mktemp -d "$CACHE/build.XXXXXX")
        "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
            -d "$tmp" "horovod==$HOROVOD_VERSION"
        echo "$HOROVOD_SHA256  $tmp/horovod-$HOROVOD_VERSION.tar.gz" | sha256sum -c --quiet
        tar -xzf "$tmp/horovod-$HOROVOD_VERSION.tar.gz" -C "$tmp"
        patch -d "$tmp/horovod-$HOROVOD_VERSION" -p1 --forward --quiet < "$HOROVOD_PATCH"
        HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
        HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 \
        HOROVOD_CPU_OPERATIONS=gloo MAKEFLAGS="-j$(nproc)" \
            "${PIP[@]}" wheel -q --no-build-isolation --no-deps --no-cache-dir \
            -w "$tmp/wheel" "$tmp/horovod-$HOROVOD_VERSION"
        rm -rf "$wheel_dir" && mv "$tmp/wheel" "$wheel_dir" && rm -rf "$tmp"   # a half-built wheel is never reused
    fi
    "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel_dir"/horovod-*.whl
    echo "$tag" > "$VENV/.horovod-build"
fi

# ------------------------------------------------------------------ 5. mantis's CPU kernels (nn/kernels)
say "building nn/kernels/libmantis_ops.so"
(cd "$ROOT" && "$VENV/bin/python" -m nn.kernels)

# ------------------------------------------------------------------ 6. checks
"$VENV/bin/python" - <<'EOF'
import numpy, mxnet
assert numpy.__version__ == "1.23.5", f"numpy {numpy.__version__} was installed; mxnet 1.9.1 needs 1.23.5"
EOF
"$VENV/bin/horovodrun" --check-build | tee "$VENV/horovod-check-build.txt"
grep -q '\[X\] MXNet' "$VENV/horovod-check-build.txt" || { say "Horovod was built without MXNet"; exit 1; }
grep -q '\[X\] Gloo' "$VENV/horovod-check-build.txt" || { say "Horovod was built without Gloo"; exit 1; }
if [ "$DEV" = 1 ]; then echo "$want dev"; else echo "$want"; fi > "$VENV/.mantis-stamp"
say "done in $(( $(date +%s) - start )) s ($VENV)"
