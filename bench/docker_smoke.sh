#!/usr/bin/env bash
# The image without a Docker daemon: run docker/Dockerfile's install steps (docker/install.sh, the same script the
# image runs) in a fresh virtual environment, lay out /srv as its COPY lines do, start the server with its CMD and
# environment on 127.0.0.1, then smoke-test it (/health, /ready, POST /predict, /metrics, the HEALTHCHECK command)
# and print the expected image size from the installed packages.
#
#   bench/docker_smoke.sh                  # the above (~1-2 min: pip installs the base requirements)
#   bench/docker_smoke.sh --url URL        # only the smoke test, against a running server (CD: the built container)
#
# Exit status 0 only when every check passed. Needs python3 (PYTHON=python3.11 to match the image).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}

smoke() { # URL: stdlib-only client, so it also runs on a bare CI runner
  "$PYTHON" - "$1" <<'PY'
import gzip, json, os, struct, sys, time, urllib.error, urllib.request, uuid, zlib

url = sys.argv[1].rstrip("/")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def get(path, timeout=5):
    with urllib.request.urlopen(url + path, timeout=timeout) as r:
        return r.status, r.read()


def png(pixels, w, h):
    "A grayscale PNG from 8-bit pixels, with the standard library only."
    raw = b"".join(b"\x00" + bytes(pixels[y * w : (y + 1) * w]) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_image():
    "The first Fashion-MNIST test image (an ankle boot) from Debian's package, else a drawn trouser."
    d = os.environ.get("FASHIONCAT_DATA", "/usr/share/datasets/fashion-mnist")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            data = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
            return png(data[16 : 16 + 784], 28, 28), "real test image 0 (Ankle boot)"
    pixels = [200 if 8 <= x <= 19 and (y < 8 or abs(x - 13.5) > 1.5) else 0 for y in range(28) for x in range(28)]
    return png(pixels, 28, 28), "drawn trouser"


t0 = time.monotonic()
while True:  # bounded wait for /ready
    try:
        if get("/ready", timeout=2)[0] == 200:
            break
    except (urllib.error.URLError, ConnectionError, OSError):
        pass
    if time.monotonic() - t0 > 120:
        sys.exit(f"smoke: {url}/ready not 200 after 120 s")
    time.sleep(0.2)
print(f"smoke: /ready after {time.monotonic() - t0:.1f} s")
assert get("/health")[0] == 200

body, what = test_image()
boundary = uuid.uuid4().hex
payload = (
    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="item.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
    + body + f"\r\n--{boundary}--\r\n".encode()
)
req = urllib.request.Request(url + "/predict", data=payload, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
with urllib.request.urlopen(req, timeout=10) as r:
    assert r.status == 200, r.status
    answer = json.loads(r.read())
text = json.dumps(answer, ensure_ascii=False)
assert any(c in text for c in CLASSES), f"no category in the answer: {text}"
print(f"smoke: POST /predict ({what}) -> {text[:300]}")

try:  # a broken upload is a client error, not a crash
    bad = urllib.request.Request(url + "/predict", data=payload.replace(body, b"not an image"), headers=req.headers)
    urllib.request.urlopen(bad, timeout=10)
    sys.exit("smoke: a broken image was accepted")
except urllib.error.HTTPError as e:
    assert 400 <= e.code < 500, e.code
    print(f"smoke: broken image -> {e.code}")

metrics = get("/metrics")[1].decode()
for name in ("fashioncat_requests_total", "fashioncat_predictions_total", "fashioncat_model_info", "process_resident_memory_bytes"):
    assert name in metrics, f"{name} not in /metrics"
print("smoke: /metrics has the contract's metrics")
PY
}

if [ "${1:-}" = "--url" ]; then
  smoke "$2"
  echo "smoke: PASSED against $2"
  exit 0
fi

start=$(date +%s)
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The build context as the Dockerfile sees it: COPY sources, from committed files plus the working tree.
mapfile -t STEPS < <("$PYTHON" - "$ROOT/docker/Dockerfile" <<'PY'
import shlex, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    kind, arg = line.split(None, 1)
    if kind in ("COPY", "ENV", "CMD", "HEALTHCHECK", "WORKDIR"):
        print(kind + "\t" + arg)
PY
)
SRV="$WORK/srv"
mkdir -p "$SRV"
ENVS=()
for step in "${STEPS[@]}"; do
  kind=${step%%$'\t'*}
  arg=${step#*$'\t'}
  case "$kind" in
    COPY)
      eval "set -- $arg"
      dest=${!#}
      for src in "${@:1:$#-1}"; do
        mkdir -p "$SRV/$dest"
        for f in $src; do # Docker copies a directory's contents, a file by its name
          if [ -d "$f" ]; then cp -r "$f/." "$SRV/$dest/"; else cp "$f" "$SRV/$dest/"; fi
        done
      done
      ;;
    ENV) eval "ENVS+=(${arg//\/srv/$SRV})" ;; # the image's /srv is $SRV here
    CMD) CMD=$arg ;;
    HEALTHCHECK) HEALTH=${arg#*CMD } ;;
  esac
done
find "$SRV" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$SRV/var/feedback" # the Dockerfile's writable folder

echo "smoke: fresh venv with $($PYTHON --version), installing as docker/install.sh does"
"$PYTHON" -m venv "$WORK/venv"
export PATH="$WORK/venv/bin:$PATH"
(cd "$SRV" && PYTHON="$WORK/venv/bin/python" sh install.sh deps >"$WORK/pip-deps.log" 2>&1) || { tail -30 "$WORK/pip-deps.log"; exit 1; }
(cd "$SRV" && PYTHON="$WORK/venv/bin/python" sh install.sh package >"$WORK/pip-pkg.log" 2>&1) || { tail -30 "$WORK/pip-pkg.log"; exit 1; }
echo "smoke: installed in $(( $(date +%s) - start )) s"
if "$WORK/venv/bin/python" -c "import torch" 2>/dev/null; then echo "smoke: torch is installed in the base install" >&2; exit 1; fi

# Expected image size: python:3.11-slim (~130 MB uncompressed) + site-packages (less pip, which the base image has)
# + what COPY brings. Byte-compiled files are kept: without them every cold start recompiles gradio.
site=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
deps_mb=$(du -sb --exclude=pip --exclude='pip-*' --exclude=setuptools --exclude='setuptools-*' --exclude=_distutils_hack "$site" | awk '{printf "%d", $1 / 1e6}')
srv_mb=$(du -sb --exclude=fashioncat "$SRV" | awk '{printf "%d", $1 / 1e6}')
echo "smoke: site-packages ${deps_mb} MB, app + model ${srv_mb} MB -> expected image ~$((130 + deps_mb + srv_mb)) MB"

# The image's CMD and environment, on loopback and a free port.
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CMD=$("$PYTHON" -c 'import json, shlex, sys; a = json.loads(sys.argv[1]); print(a[2] if a[:2] == ["sh", "-c"] else shlex.join(a))' "$CMD")
CMD=${CMD/--host 0.0.0.0/--host 127.0.0.1}
(cd "$SRV" && exec env "${ENVS[@]}" PORT="$PORT" GRADIO_ANALYTICS_ENABLED=False OMP_NUM_THREADS=1 FASHIONCAT_UI_AUTH=off \
  sh -c "$CMD" >"$WORK/server.log" 2>&1) &
SERVER_PID=$!
if ! smoke "http://127.0.0.1:$PORT"; then
  echo "--- server log"; tail -40 "$WORK/server.log"; exit 1
fi
# The HEALTHCHECK command, with the image's python: passes now, fails against a closed port.
(cd "$SRV" && PORT=$PORT sh -c "$HEALTH") || { echo "smoke: HEALTHCHECK failed" >&2; exit 1; }
if (cd "$SRV" && PORT=1 sh -c "$HEALTH" 2>/dev/null); then echo "smoke: HEALTHCHECK passes on a dead port" >&2; exit 1; fi
echo "smoke: HEALTHCHECK ok"
echo "smoke: PASSED in $(( $(date +%s) - start )) s"
