"""Deployment hardening, read from the files: the base image pinned by digest, forwarded headers trusted from the
proxy only, Kubernetes manifests valid (kubernetes-validate's offline schemas) with a read-only root filesystem,
explicit writable volumes, seccomp and the release's image tag; compose keeps Prometheus and Grafana on localhost."""

import configparser
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER, K8S = ROOT / "docker", ROOT / "docker" / "k8s"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to fit
VERSION = configparser.ConfigParser()
VERSION.read(ROOT / "settings.ini")
VERSION = VERSION["DEFAULT"]["version"]


def manifests():
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def pods():
    return [d["spec"]["template"]["spec"] for d in manifests() if d["kind"] == "Deployment"]


def test_base_image_pinned_by_digest():
    lines = [ln for ln in (DOCKER / "Dockerfile").read_text().splitlines() if ln.startswith("FROM ")]
    assert lines and all(re.fullmatch(r"FROM python:3\.11-slim@sha256:[0-9a-f]{64}( AS \w+)?", ln) for ln in lines)


def test_forwarded_headers_trusted_from_the_proxy_only():
    text = (DOCKER / "Dockerfile").read_text()
    cmd = shlex.split(next(ln for ln in text.splitlines() if ln.startswith("CMD")).split("[", 1)[1])
    assert "FORWARDED_ALLOW_IPS=127.0.0.1" in text and "forwarded-allow-ips='*'" not in " ".join(cmd)
    assert "--forwarded-allow-ips" not in text.split("CMD", 1)[1]  # uvicorn reads FORWARDED_ALLOW_IPS itself


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifests_are_valid_kubernetes(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on an unknown or mistyped field


def test_manifests_that_kubernetes_validate_would_refuse_are_refused():
    bad = manifests()[0] | {"spec": {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_pods_run_read_only_with_explicit_writable_volumes_and_seccomp():
    for pod in pods():
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]] and "/srv/var" in mounts  # tempfile, gradio, HOME
            assert c["image"] == f"ghcr.io/fashioncat/fashioncat:{VERSION}"  # the release, never :latest


def test_the_ui_pod_has_its_accounts_from_a_secret():
    ui = next(p for p in pods() if p["containers"][0]["name"] == "ui")
    (c,) = ui["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    users = Path(env["FASHIONCAT_UI_USERS"])
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(users.parent))
    assert mount["readOnly"] is True
    assert next(v for v in ui["volumes"] if v["name"] == mount["name"])["secret"]["secretName"] == "fashioncat-ui-users"


def test_compose_keeps_monitoring_local_and_secrets_out_of_the_file():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    s = compose["services"]
    assert s["prometheus"]["ports"] == ["127.0.0.1:9090:9090"] and s["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    assert s["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert s["api"]["image"].endswith(f":${{FASHIONCAT_VERSION:-{VERSION}}}")
    assert s["api"]["environment"]["FASHIONCAT_UI_USERS"] == "/run/secrets/ui_users" and s["api"]["secrets"] == [
        "ui_users"
    ]
    assert "docker/ui-users" in (ROOT / ".gitignore").read_text().splitlines()
