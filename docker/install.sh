#!/bin/sh
# The image's install steps, shared by docker/Dockerfile and bench/docker_smoke.sh so that both run the same code.
#   install.sh deps     base (serving) requirements from settings.ini, then drop test suites nobody runs in production
#   install.sh package  the fashioncat package itself, without touching the dependency layer
# PYTHON picks the interpreter (the image's python, or a fresh venv's in the smoke test).
set -eu
PYTHON=${PYTHON:-python}
case "${1:-}" in
  deps)
    $PYTHON - <<'PY' > /tmp/requirements.txt
import configparser, shlex
cfg = configparser.ConfigParser(delimiters=["="])
cfg.read("settings.ini")
print("\n".join(shlex.split(cfg["DEFAULT"]["requirements"])))
PY
    if grep -qiE '^(torch|torchvision|fastai)==' /tmp/requirements.txt; then echo "install.sh: torch in the base requirements" >&2; exit 1; fi
    $PYTHON -m pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt
    site=$($PYTHON -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf /tmp/requirements.txt "$site"/pandas/tests "$site"/numpy/*/tests
    # uvloop's extension ships with its debug info: 13 of its 14 MB. Strip it where binutils is present.
    if command -v strip >/dev/null 2>&1; then find "$site"/uvloop -name '*.so' -exec strip --strip-debug {} +; fi
    ;;
  package)
    $PYTHON -m pip install --no-cache-dir --disable-pip-version-check --no-deps .
    ;;
  *)
    echo "usage: install.sh deps|package" >&2; exit 2
    ;;
esac
