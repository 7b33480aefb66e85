"""fashioncat_predict against a real S3 API: moto's server on 127.0.0.1 (skipped when moto, boto3 or s3fs is missing),
through fsspec's s3fs backend, as a shop's object storage would be read."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

ROOT = Path(__file__).resolve().parents[1]
CLI = "from fashioncat.batch import predict_main\npredict_main()\n"  # what the console script runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    "A moto S3 server on loopback with a bucket; yields (client, environment for a subprocess); stopped afterwards."
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }  # fsspec's config from the environment: s3fs's endpoint
    try:
        client = boto3.client(
            "s3",
            endpoint_url=env["FSSPEC_S3_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket="shop")
        yield client, env
    finally:
        server.stop()


def test_predict_reads_a_bucket_and_resumes(s3, photos, model_path, tmp_path):
    from fashioncat.batch import read_results
    from fashioncat.serving import Engine

    client, s3env = s3
    kinds = ["jpeg", "png", "webp", "transparent", "grey_bg", "exif"]
    ext = {"jpeg": "jpg", "png": "png", "webp": "webp", "transparent": "png", "grey_bg": "png", "exif": "jpg"}
    for i, k in enumerate(kinds):
        client.put_object(Bucket="shop", Key=f"catalogue/{i}/{k}.{ext[k]}", Body=photos[k][0])
    client.put_object(Bucket="shop", Key="catalogue/broken.jpg", Body=photos["jpeg"][0][:300])
    client.put_object(Bucket="shop", Key="catalogue/readme.txt", Body=b"not a photo")
    script = tmp_path / "fashioncat_predict"
    script.write_text(CLI)
    env = {**os.environ, **s3env, "PYTHONPATH": str(ROOT), "FASHIONCAT_MODEL_PATH": str(model_path)}
    out = tmp_path / "r.jsonl"
    cmd = [
        sys.executable,
        str(script),
        "s3://shop/catalogue/",
        "--out",
        str(out),
        "--workers",
        "2",
        "--batch_size",
        "3",
    ]
    r = subprocess.run(cmd + ["--quiet"], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(read_results(out))
    assert [x["path"] for x in rows] == sorted(x["path"] for x in rows) and len(rows) == 7
    assert all(x["path"].startswith("s3://shop/catalogue/") for x in rows)
    (bad,) = [x for x in rows if "error" in x]
    assert bad["path"] == "s3://shop/catalogue/broken.jpg" and bad["error"] == "corrupt_image"
    engine = Engine(model_path)
    for i, k in enumerate(kinds):
        (row,) = [x for x in rows if x["path"].startswith(f"s3://shop/catalogue/{i}/")]
        want = engine.predict_images([photos[k][0]])[0]
        assert (row["category"], row["confidence"]) == (want["category"], want["confidence"]), k
    # the same command again: everything already done, nothing appended
    r = subprocess.run(cmd + ["--quiet"], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "0 categorised, 7 already done" in r.stderr, r.stderr
    assert len(out.read_text().splitlines()) == 7
    # a photo replaced in the bucket is categorised again; a list of URLs works the same way
    client.put_object(Bucket="shop", Key="catalogue/0/jpeg.jpg", Body=photos["png"][0])
    (tmp_path / "list.txt").write_text("s3://shop/catalogue/0/jpeg.jpg\ns3://shop/catalogue/1/png.png\n")
    r = subprocess.run(
        [sys.executable, str(script), "--list", str(tmp_path / "list.txt"), "--out", str(out), "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "1 categorised, 1 already done" in r.stderr, r.stderr
    last = json.loads(out.read_text().splitlines()[-1])
    assert (
        last["path"] == "s3://shop/catalogue/0/jpeg.jpg"
        and last["category"] == engine.predict_images([photos["png"][0]])[0]["category"]
    )


def test_missing_bucket_is_one_line(s3, model_path, tmp_path):
    _, s3env = s3
    script = tmp_path / "fashioncat_predict"
    script.write_text(CLI)
    env = {**os.environ, **s3env, "PYTHONPATH": str(ROOT), "FASHIONCAT_MODEL_PATH": str(model_path)}
    r = subprocess.run(
        [sys.executable, str(script), "s3://nosuchbucket/x/", "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("fashioncat_predict: "), r.stderr
