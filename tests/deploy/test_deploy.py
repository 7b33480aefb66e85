"""Deployment files checked without a Docker daemon: Prometheus config and SLA alerts (promtool), compose, Grafana,
Dockerfile, Kubernetes manifests; then the dashboard's and the alerts' metrics against the app's real /metrics."""

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PROM = DOCKER / "prometheus"
GRAFANA = DOCKER / "grafana"
K8S = ROOT / "docker" / "k8s"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; CI installs it)"
)

# The metric names the app exports (the team's contract), and what Prometheus adds itself.
CONTRACT = {
    "fashioncat_requests_total",
    "fashioncat_request_latency_seconds",
    "fashioncat_inference_latency_seconds",
    "fashioncat_batch_size",
    "fashioncat_predictions_total",
    "fashioncat_confidence",
    "fashioncat_needs_review_total",
    "fashioncat_model_info",
    "fashioncat_feedback_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}
PROMETHEUS_BUILTIN = {"up"}
SLA_ALERTS = {
    "FashioncatHighLatencyP95",
    "FashioncatHighLatencyMean",
    "FashioncatHighErrorRate",
    "FashioncatHighFailedRequestShare",
    "FashioncatHighCPU",
    "FashioncatHighMemory",
    "FashioncatTargetDown",
    "FashioncatAbsent",
    "FashioncatPredictionDrift",
}
PROBE_ROUTES = ("/health", "/ready", "/metrics")  # left out of the latency and error alerts


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], check=False, capture_output=True, text=True, timeout=120, cwd=PROM)


def metric_names(expr: str) -> set[str]:
    "Metric names in a PromQL expression (recording rules, `name:...`, are not metrics the app exports)."
    expr = re.sub(r'"[^"]*"', '""', expr)  # drop label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # and label names inside matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"(?<![\w:])([a-zA-Z_][a-zA-Z0-9_]*)(?![\w:(])", expr))
    return {n for n in names if n.startswith(("fashioncat_", "process_")) or n in PROMETHEUS_BUILTIN}


def base_name(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def dashboard_exprs() -> list[str]:
    dash = json.loads((GRAFANA / "dashboards" / "fashioncat.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    return [r["expr"] for g in load_yaml(PROM / "alerts.yml")["groups"] for r in g["rules"]]


def test_metric_names_parser():
    expr = 'sum by (le) (rate(fashioncat_x_bucket{job="fashioncat", route!~"/(a|b)"}[5m])) / fashioncat:rec:rate5m > up'
    assert metric_names(expr) == {"fashioncat_x_bucket", "up"}
    assert base_name("fashioncat_request_latency_seconds_bucket") == "fashioncat_request_latency_seconds"


# --- Prometheus: promtool ---------------------------------------------------------------------------------------


@needs_promtool
def test_promtool_check_config():
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout


@needs_promtool
def test_promtool_check_rules():
    r = promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_alerts():
    r = promtool("test", "rules", "alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path):
    "The same unit tests against rules with the drift guard removed must fail: the tests discriminate."
    rules = (PROM / "alerts.yml").read_text()
    broken = rules.replace("> 2 * avg_over_time", "> 0 * avg_over_time")
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    unit = load_yaml(PROM / "alerts_test.yml")
    unit["tests"] = [t for t in unit["tests"] if t["name"] == "steady high share stays quiet"]  # the one that must fail
    assert unit["tests"]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(unit))
    r = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode != 0
    assert "steady high share stays quiet" in r.stdout + r.stderr


def test_every_sla_alert_has_a_firing_and_a_quiet_unit_test():
    rules = [r for g in load_yaml(PROM / "alerts.yml")["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert set(alerts) == SLA_ALERTS
    assert {a["labels"]["severity"] for a in alerts.values()} <= {"page", "warning"}
    assert alerts["FashioncatHighLatencyP95"]["for"] == "5m" and "> 0.3" in alerts["FashioncatHighLatencyP95"]["expr"]
    assert alerts["FashioncatHighLatencyMean"]["for"] == "5m" and "> 0.2" in alerts["FashioncatHighLatencyMean"]["expr"]
    assert "2e9" in alerts["FashioncatHighMemory"]["expr"] and "> 0.7" in alerts["FashioncatHighCPU"]["expr"]
    cases = [c for t in load_yaml(PROM / "alerts_test.yml")["tests"] for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fires == SLA_ALERTS, SLA_ALERTS - fires
    assert quiet == SLA_ALERTS, SLA_ALERTS - quiet


def test_alerts_use_contract_metrics_and_skip_probe_routes():
    for expr in alert_exprs():
        assert {base_name(n) for n in metric_names(expr)} <= CONTRACT | PROMETHEUS_BUILTIN, expr
        if "fashioncat_request" in expr:
            assert 'route!~"/(health|ready|metrics)|/ui.*"' in expr, expr


# --- compose, Grafana, Dockerfile, Kubernetes -------------------------------------------------------------------


def test_compose_services_ports_and_files():
    compose = load_yaml(DOCKER / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"api", "prometheus", "grafana"}
    api = services["api"]
    assert (DOCKER / api["build"]["context"] / api["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    ports = {s: [p.split(":") for p in services[s]["ports"]] for s in services}
    assert ports == {
        "api": [["8000", "8000"]],
        "prometheus": [["127.0.0.1", "9090", "9090"]],
        "grafana": [["127.0.0.1", "3000", "3000"]],
    }
    # every bind mount exists; named volumes are declared
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists(), f"{name}: {src} missing"
            else:
                assert src in compose["volumes"], f"{name}: volume {src} not declared"
    # Prometheus reads its config and rules from the mounted folder, and scrapes the api service on its port
    prom = services["prometheus"]
    mount = dict(v.split(":")[:2] for v in prom["volumes"])
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_in_container = Path(config_flag.split("=", 1)[1])
    host_dir = DOCKER / next(s for s, t in mount.items() if t == str(config_in_container.parent))
    assert host_dir.resolve() == PROM
    config = load_yaml(host_dir / config_in_container.name)
    for rule_file in config["rule_files"]:
        assert (host_dir / rule_file).is_file()
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "fashioncat")
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]  # every replica of the api service
    assert sd["names"] == ["api"] and sd["type"] == "A" and str(sd["port"]) == ports["api"][0][-1]
    # Grafana: datasource points at the prometheus service, dashboards provider at the mounted folder
    graf = services["grafana"]
    gmount = {t: s for s, t in (v.split(":")[:2] for v in graf["volumes"])}
    prov = DOCKER / gmount["/etc/grafana/provisioning"]
    datasource = load_yaml(prov / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["url"] == f"http://prometheus:{ports['prometheus'][0][-1]}"
    provider = load_yaml(prov / "dashboards" / "fashioncat.yml")["providers"][0]
    dash_dir = DOCKER / gmount[provider["options"]["path"]]
    assert (dash_dir / "fashioncat.json").is_file()
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dash_dir / Path(home).relative_to(provider["options"]["path"])).is_file()
    # the dashboard queries the provisioned datasource
    dash = json.loads((dash_dir / "fashioncat.json").read_text())
    assert {p["datasource"]["uid"] for p in dash["panels"]} == {datasource["uid"]}


def test_dashboard_panels_and_metrics():
    dash = json.loads((GRAFANA / "dashboards" / "fashioncat.json").read_text())
    assert dash["uid"] == "fashioncat"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    exprs = dashboard_exprs()
    used = set().union(*map(metric_names, exprs))
    assert {base_name(n) for n in used} <= CONTRACT | PROMETHEUS_BUILTIN, used
    joined = "\n".join(exprs)
    for q in ("0.5", "0.95", "0.99"):  # latency p50/p95/p99
        assert f"histogram_quantile({q}, sum by (le) (rate(fashioncat_request_latency_seconds_bucket" in joined
    for needed in (
        "rate(fashioncat_requests_total",  # request rate
        'status=~"5.."',  # error rate
        "rate(process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "sum by (category) (rate(fashioncat_predictions_total",
        "rate(fashioncat_needs_review_total",
    ):
        assert needed in joined, needed


def dockerignore_allows(path: str) -> bool:
    "Docker's rule: the last matching pattern wins, `!` re-includes; a pattern matching a parent matches the path."
    allowed = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg, pat = line.startswith("!"), line.lstrip("!").rstrip("/")
        pat = pat.replace("**/", "")
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p.split("/")[-1], pat) for p in prefixes):
            allowed = neg
    return allowed


def dockerfile() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_layers_user_healthcheck():
    steps = dockerfile()
    kinds = [k for k, _ in steps]
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11-slim@sha256:")
    copies = [shlex.split(a) for k, a in steps if k == "COPY"]
    sources = [s for c in copies for s in c[:-1] if not s.startswith("--")]
    # every COPY source exists and gets past .dockerignore
    for src in sources:
        matches = sorted(ROOT.glob(src.rstrip("/")))
        assert matches, f"COPY {src}: nothing in the repository matches"
        for m in matches:
            files = [m] if m.is_file() else [p for p in m.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert dockerignore_allows(rel), f"{rel} is COPY'd but excluded by .dockerignore"
    # dependency layer (settings.ini + install.sh deps) before any code is copied
    deps_run = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "sh install.sh deps" in a)
    first_code = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "fashioncat/" in a)
    assert deps_run < first_code and "settings.ini" in steps[deps_run - 1][1]
    assert kinds.index("USER") > kinds.index("RUN") and dict(steps)["USER"] not in ("root", "0")
    health = dict(steps)["HEALTHCHECK"]
    assert "/health" in health and "urllib.request" in health and "curl" not in health
    assert "WEB_CONCURRENCY=1" in dict(steps)["ENV"] and "uvicorn app.main:app" in dict(steps)["CMD"]
    assert "--loop uvloop --http app.core.edge:GuardedHttpTools" in dict(steps)["CMD"]  # httptools, with the guards
    assert "export PROMETHEUS_MULTIPROC_DIR=" in dict(steps)["CMD"]  # several workers: one set of metrics
    assert "torch" not in (DOCKER / "install.sh").read_text().replace("torch in the base", "").replace(
        "(torch|torchvision|fastai)", ""
    )


def test_dockerignore_semantics():
    assert dockerignore_allows("settings.ini") and dockerignore_allows("fashioncat/serving.py")
    assert not dockerignore_allows(".venv/bin/python") and not dockerignore_allows("nbs/00_data.ipynb")
    assert not dockerignore_allows("app/__pycache__/main.cpython-311.pyc")
    assert dockerignore_allows("models/fashioncat-int8.onnx") and not dockerignore_allows("models/best_model/x.pth")


def test_k8s_manifests():
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for f in sorted(K8S.glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    }
    assert set(docs) == {
        ("Deployment", "fashioncat"),
        ("Service", "fashioncat"),
        ("HorizontalPodAutoscaler", "fashioncat"),
    } | {
        ("Deployment", "fashioncat-ui"),
        ("Service", "fashioncat-ui"),
        ("PersistentVolumeClaim", "fashioncat-feedback"),
    } | {("Job", "fashioncat-batch"), ("PersistentVolumeClaim", "fashioncat-batch-results")}  # test_batch_job.py
    dep, svc, hpa = (
        docs["Deployment", "fashioncat"],
        docs["Service", "fashioncat"],
        docs["HorizontalPodAutoscaler", "fashioncat"],
    )
    env = lambda c: {e["name"]: e.get("value") for e in c["env"]}
    # the API pods without the UI; the UI in one pod that keeps its corrections on the claimed volume
    assert env(dep["spec"]["template"]["spec"]["containers"][0])["FASHIONCAT_UI_ENABLED"] == "false"
    ui = docs["Deployment", "fashioncat-ui"]["spec"]
    (uc,) = ui["template"]["spec"]["containers"]
    assert ui["replicas"] == 1 and ui["strategy"]["type"] == "Recreate" and "FASHIONCAT_UI_ENABLED" not in env(uc)
    mount = next(m for m in uc["volumeMounts"] if m["name"] == "feedback")
    assert mount["mountPath"] == env(uc)["FASHIONCAT_DATA_DIR"]
    vol = next(v for v in ui["template"]["spec"]["volumes"] if v["name"] == "feedback")
    assert vol["persistentVolumeClaim"]["claimName"] == "fashioncat-feedback"
    assert docs["Service", "fashioncat-ui"]["spec"]["selector"].items() <= ui["template"]["metadata"]["labels"].items()
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port == {"http": 8000}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert svc["spec"]["ports"][0]["targetPort"] in port
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] < 70
    assert c["resources"]["limits"]["memory"] == "2Gi"


def test_workflows():
    ci = load_yaml(ROOT / ".github" / "workflows" / "ci.yml")
    cd = load_yaml(ROOT / ".github" / "workflows" / "cd.yml")
    on_ci, on_cd = ci[True], cd[True]  # YAML 1.1 reads the key `on` as True
    assert set(on_ci) == {"push", "pull_request", "workflow_call"} and on_cd == {"push": {"tags": ["v*"]}}
    assert (
        cd["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml" and cd["jobs"]["image"]["needs"] == "ci"
    )  # tested first
    jobs = ci["jobs"]
    assert jobs["test"]["strategy"]["matrix"]["python"] == [
        "3.11",
        "3.12",
    ]  # the pinned numpy, pandas, onnxruntime need 3.11
    runs = lambda job: "\n".join(s.get("run", "") for s in job["steps"])
    assert "dataset-fashion-mnist prometheus" in runs(jobs["test"]) and "make test" in runs(jobs["test"])
    assert "ruff check app/ tests/ bench/" in runs(jobs["lint"])
    assert "ruff format --check app/ tests/ bench/" in runs(jobs["lint"])
    assert all(c in runs(jobs["promtool"]) for c in ("check config", "check rules", "test rules"))
    for job in (jobs["image"], cd["jobs"]["image"]):
        assert "docker run -d" in runs(job) and "bench/docker_smoke.sh --url http://127.0.0.1:8000" in runs(job)
    assert "docker push" in runs(cd["jobs"]["image"]) and cd["permissions"]["packages"] == "write"
    assert (ROOT / "bench" / "docker_smoke.sh").stat().st_mode & 0o111


# --- against the app: its real /metrics, and a real Prometheus scraping it ----------------------------------------

APP = ROOT / "app" / "main.py"
needs_app = pytest.mark.skipif(not APP.exists(), reason="app/main.py does not exist yet")


def png_bytes() -> bytes:
    "A real Fashion-MNIST test image as PNG (a drawn square when the dataset is absent)."
    import io

    import numpy as np
    from PIL import Image

    try:
        from fashioncat.data import load_split

        x = load_split("test")[0][0]
    except Exception:  # noqa: BLE001 - any data problem: the metrics test only needs some image
        x = np.zeros((28, 28), np.uint8)
        x[6:22, 8:20] = 200
    b = io.BytesIO()
    Image.fromarray(x).save(b, "PNG")
    return b.getvalue()


def exported(metrics_text: str) -> set[str]:
    "Every name in an exposition: TYPE lines (families with no sample yet) and sample names."
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def app_metrics(model_path, tmp_path_factory) -> str:
    "The app's /metrics after a prediction, a probe and a broken upload (the UI mounted, as in production)."
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    settings = Settings(model_path=str(model_path), data_dir=str(tmp_path_factory.mktemp("feedback")))
    with TestClient(create_app(settings, ui=True)) as client:
        assert client.get("/ready").status_code == 200
        r = client.post("/predict", files={"file": ("item.png", png_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        assert client.get("/health").status_code == 200
        bad = client.post("/predict", files={"file": ("x.png", b"not an image", "image/png")})
        assert 400 <= bad.status_code < 500, bad.text
        return client.get("/metrics").text


@needs_app
def test_app_exports_the_contract_metrics(app_metrics):
    names = exported(app_metrics)
    for name in CONTRACT:
        assert name in names or name.removesuffix("_total") in names, f"{name} not in the app's /metrics"


@needs_app
def test_dashboard_and_alert_metrics_are_exported_by_the_app(app_metrics):
    names = exported(app_metrics) | PROMETHEUS_BUILTIN
    for expr in dashboard_exprs() + alert_exprs():
        for n in metric_names(expr):
            assert n in names or base_name(n) in names, f"{n} (in {expr!r}) is not in the app's /metrics"


@needs_app
def test_route_and_status_labels_match_the_alerts(app_metrics):
    "The alerts leave out the probe routes by their `route` label, and read 5xx from `status`: check the values."
    from prometheus_client.parser import text_string_to_metric_families

    samples = [
        s.labels
        for fam in text_string_to_metric_families(app_metrics)
        for s in fam.samples
        if s.name == "fashioncat_requests_total"
    ]
    routes = {s["route"] for s in samples}
    assert {"/predict", "/health", "/ready"} <= routes, routes
    statuses = {s["status"] for s in samples if s["route"] == "/predict"}
    assert "200" in statuses and len(statuses) == 2 and all(re.fullmatch(r"200|4\d\d", x) for x in statuses), statuses
    assert all(re.fullmatch(r"[1-5]\d\d", s["status"]) for s in samples)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str):
    import time

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last!r})")


def stop(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@needs_app
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (apt-get install prometheus)")
def test_real_prometheus_scrapes_the_api(tmp_path, model_path):
    "uvicorn and Debian's Prometheus on 127.0.0.1; the metric read back through Prometheus's HTTP API."
    import os
    import sys

    import httpx

    api_port, prom_port = free_port(), free_port()
    api_url, prom_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prom_port}"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    env.update(FASHIONCAT_MODEL_PATH=str(model_path), FASHIONCAT_DATA_DIR=str(tmp_path / "feedback"))
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(api_port)]
    api = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=(tmp_path / "api.log").open("wb"), stderr=subprocess.STDOUT)
    prom = None
    try:
        wait_for(lambda: httpx.get(api_url + "/ready").status_code == 200, 60, "api /ready")
        r = httpx.post(api_url + "/predict", files={"file": ("item.png", png_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        # the image's HEALTHCHECK command passes against it
        health = dict(dockerfile())["HEALTHCHECK"].split(" CMD ", 1)[1]
        hc = subprocess.run(["sh", "-c", health], env=dict(env, PORT=str(api_port)), check=False, timeout=30)
        assert hc.returncode == 0

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROM / "alerts.yml")],
            "scrape_configs": [{"job_name": "fashioncat", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_cmd = [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ]
        prom = subprocess.Popen(prom_cmd, stdout=(tmp_path / "prom.log").open("wb"), stderr=subprocess.STDOUT)

        def query(q: str) -> list:
            body = httpx.get(prom_url + "/api/v1/query", params={"query": q}).json()
            assert body["status"] == "success", body
            return body["data"]["result"]

        result = wait_for(lambda: query('fashioncat_predictions_total{job="fashioncat"}'), 60, "a scraped prediction")
        assert sum(float(s["value"][1]) for s in result) >= 1
        assert {s["metric"]["instance"] for s in result} == {f"127.0.0.1:{api_port}"}
        assert float(query('up{job="fashioncat"}')[0]["value"][1]) == 1
        # the SLA rules loaded and evaluate without error against the real series
        groups = wait_for(
            lambda: [
                g
                for g in httpx.get(prom_url + "/api/v1/rules").json()["data"]["groups"]
                if all(r.get("lastEvaluation", "").startswith("2") and r["health"] == "ok" for r in g["rules"])
            ],
            30,
            "rules evaluated",
        )
        assert {g["name"] for g in groups} == {"fashioncat-recording", "fashioncat-sla"}
        assert not [
            a for a in httpx.get(prom_url + "/api/v1/alerts").json()["data"]["alerts"] if a["state"] == "firing"
        ]
    except AssertionError:
        for log in ("api.log", "prom.log"):
            if (tmp_path / log).exists():
                print(f"--- {log}\n" + (tmp_path / log).read_text()[-3000:])
        raise
    finally:
        if prom:
            stop(prom)
        stop(api)


def test_scale_out_compose_and_load_balancer():
    "`--scale api=N` behind nginx: the replicas publish no port, nginx proxies to the api service's port."

    class ComposeLoader(yaml.SafeLoader):
        pass

    ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset", loader.construct_sequence(node)))
    base = load_yaml(DOCKER / "docker-compose.yml")["services"]
    scale = yaml.load((DOCKER / "docker-compose.scale.yml").read_text(), ComposeLoader)["services"]
    assert scale["api"]["ports"] == ("!reset", [])
    lb = scale["lb"]
    (mount,) = lb["volumes"]
    conf_path = DOCKER / mount.split(":")[0]
    assert mount.split(":")[1] == "/etc/nginx/nginx.conf"
    conf = conf_path.read_text()
    api_port = base["api"]["ports"][0].split(":")[1]
    assert re.findall(r"server (\S+);", conf) == [f"api:{api_port}"] * 2
    assert f"listen {lb['ports'][0].split(':')[1]};" in conf
    assert lb["ports"][0].split(":")[0] == base["api"]["ports"][0].split(":")[0]  # same public port as one replica
