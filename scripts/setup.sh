#!/usr/bin/env bash
# Install what this checkout needs and is missing; a fast no-op when everything is there.
#
#   scripts/setup.sh [APT_PACKAGE ...]     (the Makefile passes its APT_PACKAGES list; `make demo` / `make test`)
#
# 1. Debian packages: each one dpkg does not list as installed is installed with apt-get (one `apt-get update`
#    first), as root, or through sudo when not root.
# 2. Python: a venv at .venv (created with $PYTHON, default python3) with `pip install -r requirements.txt`.
#    A stamp file (.venv-setup.stamp) records keys = hash of requirements.txt + the apt list + the venv's
#    identity; while the current key is in it, pip is not run (the apt check in 1. is a quick dpkg query). Without a matching stamp an existing venv that already satisfies
#    requirements.txt (versions and imports, scripts/check_requirements.py) is accepted as is and stamped.
# Environment: PYTHON (interpreter for a new venv), OMNI_TF_SKIP_APT=1 (skip step 1 on non-Debian machines).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
STAMP="$ROOT/.venv-setup.stamp"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=("$@")

say() { echo "[setup] $*"; }
die() {
  echo "" >&2
  echo "[setup] ERROR: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------------- apt
run_as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
  else
    die "need root to run '$*' (not root and no sudo). Run as root, or install it by hand."
  fi
}

missing_apt_packages() {
  local pkg status
  for pkg in "$@"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "installed" ]] || echo "$pkg"
  done
}

ensure_apt() {
  local pkgs=("$@")
  # A Python without ensurepip (Debian's python3 without python3-venv) cannot create the venv.
  if [[ ! -x "$VENV/bin/python" ]] && ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
    pkgs+=(python3-venv)
  fi
  [[ ${#pkgs[@]} -gt 0 ]] || return 0
  if [[ "${OMNI_TF_SKIP_APT:-0}" == "1" ]]; then
    say "OMNI_TF_SKIP_APT=1: not checking Debian packages (${pkgs[*]})"
    return 0
  fi
  command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script installs system packages \
with apt (Debian/Ubuntu). Install ${pkgs[*]} by other means and rerun with OMNI_TF_SKIP_APT=1."
  local missing
  mapfile -t missing < <(missing_apt_packages "${pkgs[@]}")
  [[ ${#missing[@]} -gt 0 ]] || return 0
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run_as_root apt-get update -q || die "'apt-get update' failed (network to the Debian mirror? root?)."
  run_as_root apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || die "'apt-get install ${missing[*]}' failed; see the apt output above."
  mapfile -t missing < <(missing_apt_packages "${pkgs[@]}")
  [[ ${#missing[@]} -eq 0 ]] || die "still not installed after apt-get: ${missing[*]}"
}

# ---------------------------------------------------------------------------------------------------- venv
stamp_key() {
  {
    sha256sum requirements.txt
    echo "apt: ${APT_PACKAGES[*]}"
    # The venv's identity: recreating .venv changes the inode of its pyvenv.cfg.
    stat -c 'venv: %i %Y' "$VENV/pyvenv.cfg"
  } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
  [[ -f requirements.txt ]] || die "requirements.txt not found in $ROOT"
  if [[ ! -e "$VENV" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3.11 or set PYTHON=..."
    "$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 10), sys.version' 2>/dev/null \
      || die "'$PYTHON' is $("$PYTHON" --version 2>&1); Python 3.11 is required (set PYTHON=python3.11)."
    say "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' failed (Debian: apt-get install python3-venv)."
  fi
  [[ -f "$VENV/pyvenv.cfg" ]] && "$VENV/bin/python" -c "pass" >/dev/null 2>&1 \
    || die "$VENV exists but $VENV/bin/python does not run. Remove it (rm -rf .venv) and rerun."

  local key
  key="$(stamp_key)"
  if [[ -f "$STAMP" ]] && grep -qxF "$key" "$STAMP"; then
    return 0
  fi
  if "$VENV/bin/python" scripts/check_requirements.py requirements.txt 2>/dev/null; then
    say "existing venv satisfies requirements.txt"
  else
    say "pip install -r requirements.txt into $VENV (TensorFlow: 1-2 minutes on a fresh venv)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off -q \
      -r requirements.txt || die "pip install -r requirements.txt failed; see the pip output above."
    local log
    log="$(mktemp)"
    "$VENV/bin/python" scripts/check_requirements.py requirements.txt 2>"$log" \
      || { cat "$log" >&2; rm -f "$log"; die "requirements.txt installed but the check above still fails."; }
    rm -f "$log"
  fi
  # One key per apt list (make demo / make test), so alternating between them stays a no-op.
  { grep -vxF "$key" "$STAMP" 2>/dev/null | tail -n 3 || true; echo "$key"; } >"$STAMP.tmp"
  mv "$STAMP.tmp" "$STAMP"
}

ensure_apt "${APT_PACKAGES[@]}"
ensure_venv
