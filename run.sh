#!/usr/bin/env bash
# cnnkit set-up and entry point. Usage:
#   ./run.sh demo [cnnkit train options]   train the course CNN on Fashion-MNIST -> runs/demo-<time>/
#   ./run.sh test [pytest options]         lint + the test suite (one worker per core, up to 4)
#   ./run.sh setup                         only install (virtual env, package, PyTorch, data)
#   ./run.sh cnnkit ARGS...                run any cnnkit command inside the environment
# Safe to run again: every step checks what is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

python_bin="${PYTHON:-python3}"
# Versions this platform provides; override with CNNKIT_TORCH="torch==X torchvision==Y".
torch_spec="${CNNKIT_TORCH:-torch==2.14.1 torchvision==0.29.1}"
# Optional parts of the package the set-up installs (pyproject's [project.optional-dependencies]).
extras="test,export,studio,notebooks,imagenet,keras"
# Debian packages the set-up adds where apt works (as root); each is optional, and what needs
# one says so when it is missing.
apt_packages="chromium chromium-driver fonts-nanum"
deps_hash="$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
venv="${CNNKIT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cnnkit/venv-$deps_hash}"

log() { printf '[run.sh] %s\n' "$*" >&2; }

setup_venv() {
  if [ ! -f "$venv/.complete" ]; then
    if [ -z "${CNNKIT_VENV:-}" ]; then
      log "creating virtual env in $venv"
      rm -rf "$venv"
      # Environments of older dependency sets are several GB each: keep only the one in use.
      find "$(dirname "$venv")" -maxdepth 1 -name 'venv-*' ! -name "$(basename "$venv")" \
        -exec rm -rf {} + 2>/dev/null || true
    else
      log "installing into $venv (CNNKIT_VENV; an existing env there is kept)"
    fi
    [ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade "setuptools>=68" wheel
    # The newest allowed versions only when the pinned ones do not exist here; any other failure
    # (a full disk, no network) stops with pip's own message.
    # shellcheck disable=SC2086
    if ! pip_out="$("$venv/bin/pip" install -q $torch_spec 2>&1)"; then
      printf '%s\n' "$pip_out" >&2
      if ! grep -qE "No matching distribution found|Could not find a version that satisfies" <<<"$pip_out"; then
        log "installing PyTorch ($torch_spec) failed (pip's message above); fix that and run ./run.sh again"
        exit 1
      fi
      log "pinned PyTorch ($torch_spec) not available here; installing the newest allowed by pyproject"
      "$venv/bin/pip" install -q "torch>=2.6" "torchvision>=0.21"
    fi
    # The package's own dependencies (torch is already satisfied, so nothing is re-downloaded).
    "$venv/bin/pip" install -q -e ".[$extras]"
    touch "$venv/.complete"
  fi
  # Always point the env at this checkout (cheap; a cached env may come from another clone).
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null
}

setup_apt() {
  [ -n "$apt_packages" ] || return 0
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ] || return 0
  local missing="" pkg
  for pkg in $apt_packages; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  [ -n "$missing" ] || return 0
  log "installing Debian packages:$missing"
  # shellcheck disable=SC2086
  if ! apt-get install -y -qq $missing >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq $missing >/dev/null 2>&1 || log "apt could not install:$missing"
  fi
}

setup_data() {
  if "$venv/bin/python" -m cnnkit.data.fashion_mnist --check >/dev/null 2>&1; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    log "installing the Debian package dataset-fashion-mnist"
    if ! apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || log "apt could not install it"
    fi
  fi
  if ! "$venv/bin/python" -m cnnkit.data.fashion_mnist --check >/dev/null 2>&1; then
    log "downloading Fashion-MNIST (checked against SHA-256)"
    "$venv/bin/python" -m cnnkit.data.fashion_mnist --download
  fi
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup_apt; setup_venv; setup_data ;;
  demo)
    setup_apt; setup_venv; setup_data
    out="runs/demo-$(date +%Y%m%d-%H%M%S)"
    exec "$venv/bin/cnnkit" train --model hongong_cnn --data fashion-mnist --out "$out" "$@" ;;
  test)
    setup_apt; setup_venv; setup_data
    "$venv/bin/ruff" check src tests bench
    "$venv/bin/ruff" format --check src tests bench
    # A worker per core (at most 4), whole files to one worker: module fixtures are built once.
    exec "$venv/bin/python" -m pytest -q -n logical --maxprocesses 4 --dist loadfile "$@" ;;
  cnnkit)
    setup_apt; setup_venv; setup_data
    exec "$venv/bin/cnnkit" "$@" ;;
  *)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    [ "$cmd" = "help" ] || exit 2 ;;
esac
