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
