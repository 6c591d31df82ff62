# Sourced by scripts/start and scripts/test (not a command): makes .venv and installs the project into it.

# ensure_venv EXTRA: create .venv if missing and `pip install -e .` ("app") or `-e '.[test]'` ("test"),
# again only when pyproject.toml has changed since the last install of that kind.
ensure_venv() {
  local extra=$1 target=. python=${PYTHON:-python3}
  [ "$extra" = app ] || target=".[$extra]"
  if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv with $("$python" --version 2>&1)" >&2
    # --upgrade-deps: the pip and setuptools a venv bundles are old releases with published
    # advisories (the dependency audit lists them); take the current ones from the index
    "$python" -m venv --upgrade-deps .venv || {
      echo "error: '$python -m venv .venv' failed (on Debian or Ubuntu: apt-get install python3-venv)" >&2
      return 1
    }
  fi
  local stamp=".venv/.installed-$extra"
  if ! cmp -s pyproject.toml "$stamp"; then
    echo "Installing the project into .venv (pip install -e '$target')" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --editable "$target"
    cp pyproject.toml "$stamp"
  fi
}
