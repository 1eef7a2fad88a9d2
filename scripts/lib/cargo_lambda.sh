# cargo-lambda (the Lambda Runtime API emulation the function tests run under), installed from
# PyPI into a venv (about 30 s, once per machine; it brings zig for `cargo lambda build`).
# Source this file; `install_cargo_lambda` exports STOWAGE_TEST_CARGO_LAMBDA, the executable.
# The tests start `cargo lambda watch --only-lambda-apis` themselves and stop it by its PID.

CARGO_LAMBDA_VERSION="${CARGO_LAMBDA_VERSION:-1.9.2}"

_cargo_lambda_tools_dir() {
  echo "${STOWAGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stowage}"
}

install_cargo_lambda() {
  local venv
  venv="$(_cargo_lambda_tools_dir)/cargo-lambda-$CARGO_LAMBDA_VERSION"
  if ! "$venv/bin/cargo-lambda" lambda --version >/dev/null 2>&1; then
    echo "installing cargo-lambda $CARGO_LAMBDA_VERSION into $venv (once per machine)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2 || return 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "cargo-lambda==$CARGO_LAMBDA_VERSION" >&2 || { rm -rf "$venv"; return 1; }
  fi
  export STOWAGE_TEST_CARGO_LAMBDA="$venv/bin/cargo-lambda"
  echo "cargo-lambda $CARGO_LAMBDA_VERSION at $STOWAGE_TEST_CARGO_LAMBDA"
}
