# cargo-lambda (the Lambda Runtime API emulation the function tests run under), installed from
# PyPI into a venv (about 30 s, once per machine; it brings zig for `cargo lambda build`).
# Source this file; `install_cargo_lambda` exports STOWAGE_TEST_CARGO_LAMBDA, the executable.
# The tests start `cargo lambda watch --only-lambda-apis` themselves and stop it by its PID.

CARGO_LAMBDA_VERSION="${CARGO_LAMBDA_VERSION:-1.9.2}"

. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

install_cargo_lambda() {
  local venv
  venv="$(tools_dir)/cargo-lambda-$CARGO_LAMBDA_VERSION"
  if ! "$venv/bin/cargo-lambda" lambda --version >/dev/null 2>&1; then
    echo "installing cargo-lambda $CARGO_LAMBDA_VERSION into $venv (once per machine)" >&2
    pip_venv python3 "$venv" "cargo-lambda==$CARGO_LAMBDA_VERSION" || return 1
  fi
  export STOWAGE_TEST_CARGO_LAMBDA="$venv/bin/cargo-lambda"
  echo "cargo-lambda $CARGO_LAMBDA_VERSION at $STOWAGE_TEST_CARGO_LAMBDA"
}
