# What the server scripts share: a free loopback port, and stopping a process by its PID.
# Sourced by scripts/lib/*.sh and localstack/lib.sh.

# Where tools are installed, once per machine.
tools_dir() {
  echo "${STOWAGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stowage}"
}

# pip_venv PYTHON VENV PACKAGE...: (re)creates the venv VENV with PYTHON and installs the
# PACKAGEs from PyPI into it; on failure nothing is left at VENV.
pip_venv() {
  local python="$1" venv="$2"
  shift 2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2 || return 1
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2 \
    || { rm -rf "$venv"; return 1; }
}

# debian_unpack PACKAGE DIR: fetches Debian's PACKAGE with `apt-get download` (after an
# `apt-get update` if the first try fails and we are root) and unpacks it with `dpkg -x` into
# DIR/root: no service installed or started behind our back, and no root needed otherwise.
debian_unpack() {
  local package="$1" dir="$2"
  rm -rf "$dir"
  mkdir -p "$dir"
  if ! (cd "$dir" && apt-get download -qq "$package" >"$dir/download.log" 2>&1); then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null 2>&1 || true
    fi
    (cd "$dir" && apt-get download -qq "$package" >"$dir/download.log" 2>&1) || {
      echo "apt-get download $package failed:" >&2
      cat "$dir/download.log" >&2
      return 1
    }
  fi
  dpkg -x "$dir/${package}"_*.deb "$dir/root"
}

# Prints a loopback port nobody listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_pid PID [SECONDS]: SIGTERM, then SIGKILL if it is still running after SECONDS (default
# 10; some servers, LocalStack among them, sometimes ignore SIGTERM).
stop_pid() {
  local pid="$1" tenths=$(( ${2:-10} * 10 ))
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$tenths"); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# wait_ready PID SECONDS PROBE...: runs PROBE (a command or function) every 0.2 s until it
# succeeds (0), the process PID exits or SECONDS pass (1).
wait_ready() {
  local pid="$1" tries=$(( $2 * 5 ))
  shift 2
  for _ in $(seq 1 "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
