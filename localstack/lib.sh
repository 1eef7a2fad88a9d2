# LocalStack (S3, Secrets Manager, SSM) on the host: install into a venv, start on a free loopback port, stop by
# PID. Source this file; `start_localstack` exports STOWAGE_TEST_S3_ENDPOINT and
# STOWAGE_TEST_LOCALSTACK_PYTHON (so a test can start a private LocalStack of its own) and
# `stop_localstack` stops it. Used by scripts/test and by localstack/up.
#
# With STOWAGE_TEST_LOCALSTACK=container (where a Docker engine exists) LocalStack's image runs
# instead, through testcontainers: the tests crate's `localstack-container` binary holds the
# container and removes it when stopped by its PID; the tests' private LocalStacks are
# containers too (tests/src/localstack.rs).
#
# LocalStack needs Python >= 3.12; pyenv interpreters are looked for when python3 is older.
# The venv lives in ${STOWAGE_TOOLS_DIR:-~/.cache/stowage} so it is built once per machine
# (about 2 minutes); the pins are those LocalStack 2026.3 needs to import at all.

. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/process.sh"

LOCALSTACK_VERSION="${LOCALSTACK_VERSION:-2026.3.0}"
LS_DIR=""
LS_PID=""

_localstack_base_python() {
  local candidate
  for candidate in python3.13 python3.12 python3 \
    "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# Prints the venv's python, building the venv first if needed.
install_localstack() {
  local venv base
  venv="$(tools_dir)/localstack-$LOCALSTACK_VERSION"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
    echo "$venv/bin/python"
    return 0
  fi
  base=$(_localstack_base_python) || {
    echo "install_localstack: LocalStack needs Python >= 3.12 (none on PATH or under ~/.pyenv/versions)" >&2
    return 1
  }
  echo "installing LocalStack $LOCALSTACK_VERSION into $venv (once per machine, ~2 min)" >&2
  pip_venv "$base" "$venv" "localstack-core[runtime]==$LOCALSTACK_VERSION" 'cbor2<6' \
    'pyopenssl==25.3.0' 'cryptography<47' service-identity || return 1
  echo "$venv/bin/python"
}

_localstack_s3_ready() {
  curl -fsS "http://127.0.0.1:$1/_localstack/health" | grep -q '"s3": "\(available\|running\)"'
}

# start_localstack [PORT]: a free port unless one is given.
start_localstack() {
  case "${STOWAGE_TEST_LOCALSTACK:-host}" in
    host) ;;
    container) _start_localstack_container "$@"; return ;;
    *) echo "start_localstack: STOWAGE_TEST_LOCALSTACK=$STOWAGE_TEST_LOCALSTACK: expected host or container" >&2
       return 1 ;;
  esac
  local python port
  python=$(install_localstack) || return 1
  LS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stowage-localstack.XXXXXX")
  port="${1:-$(free_port)}"
  GATEWAY_LISTEN="127.0.0.1:$port" SERVICES=s3,secretsmanager,ssm DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 \
    DISABLE_EVENTS=1 GATEWAY_SERVER=hypercorn S3_SKIP_SIGNATURE_VALIDATION=0 \
    LOCALSTACK_VOLUME_DIR="$LS_DIR/volume" TMPDIR="$LS_DIR" \
    "$python" -m localstack.runtime.main >"$LS_DIR/localstack.log" 2>&1 &
  LS_PID=$!
  if wait_ready "$LS_PID" 60 _localstack_s3_ready "$port"; then
    export STOWAGE_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
    export STOWAGE_TEST_LOCALSTACK_PYTHON="$python"
    echo "LocalStack $LOCALSTACK_VERSION (S3, Secrets Manager, SSM) on 127.0.0.1:$port (pid $LS_PID)"
    return 0
  fi
  echo "start_localstack: LocalStack did not become ready; its log:" >&2
  tail -n 40 "$LS_DIR/localstack.log" >&2
  stop_localstack
  return 1
}

# LocalStack's image through testcontainers; the image pull may take minutes the first time.
_start_localstack_container() {
  local port bin="${CARGO_TARGET_DIR:-target}/debug/localstack-container"
  cargo build --quiet --locked -p stowage-tests --bin localstack-container || return 1
  LS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stowage-localstack.XXXXXX")
  port="${1:-$(free_port)}"
  "$bin" "$port" >"$LS_DIR/localstack.log" 2>&1 &
  LS_PID=$!
  if wait_ready "$LS_PID" 300 _localstack_s3_ready "$port"; then
    export STOWAGE_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
    echo "LocalStack container (S3, Secrets Manager, SSM) on 127.0.0.1:$port (pid $LS_PID holds it)"
    return 0
  fi
  echo "start_localstack: LocalStack's container did not become ready:" >&2
  tail -n 40 "$LS_DIR/localstack.log" >&2
  stop_localstack
  return 1
}

stop_localstack() {
  # LocalStack sometimes ignores SIGTERM (10 s, then SIGKILL); localstack-container removes its
  # container on SIGTERM, which may take longer.
  local grace=10
  [ "${STOWAGE_TEST_LOCALSTACK:-host}" = container ] && grace=30
  stop_pid "$LS_PID" "$grace"
  [ -n "$LS_DIR" ] && rm -rf "$LS_DIR"
  LS_PID=""
  LS_DIR=""
}
