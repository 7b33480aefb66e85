"""The whole-catalogue Indexed Job (docker/k8s/batch-job.yaml): well-formed, runs the API's image, one shard per
completion index, and valid against the Kubernetes schema when kubernetes-validate is installed."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"


def docs() -> dict:
    return {
        (d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((K8S / "batch-job.yaml").read_text()) if d
    }


def expand(arg: str, env: dict) -> str:
    "Kubernetes' $(VAR) expansion of a container argument."
    return re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], arg)


def test_indexed_job_shards_the_catalogue():
    d = docs()
    assert set(d) == {("Job", "fashioncat-batch"), ("PersistentVolumeClaim", "fashioncat-batch-results")}
    job = d["Job", "fashioncat-batch"]["spec"]
    assert job["completionMode"] == "Indexed" and job["parallelism"] <= job["completions"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    (api,) = yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"]
    assert c["image"] == api["image"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert int(env["SHARDS"]) == job["completions"]
    # what pod 3 runs, once the Job controller has set JOB_COMPLETION_INDEX
    argv = c["command"] + [expand(a, {**env, "JOB_COMPLETION_INDEX": "3"}) for a in c["args"]]
    assert argv[0] == "fashioncat_predict"
    assert argv[argv.index("--shard") + 1] == f"3/{job['completions']}"
    out = argv[argv.index("--out") + 1]
    (mount,) = c["volumeMounts"]
    assert out == mount["mountPath"] + "/shard-3.jsonl", shlex.join(argv)
    (vol,) = pod["volumes"]
    assert vol["name"] == mount["name"]
    claim = d["PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    assert c["resources"]["requests"]["cpu"] == argv[argv.index("--workers") + 1]  # one worker per requested core


def test_the_command_line_parses_and_shards():
    "The Job's arguments are accepted by fashioncat_predict's parser, and --shard means what the Job says."
    from fastcore.script import anno_parser

    from fashioncat.batch import parse_shard, predict_main

    (c,) = docs()["Job", "fashioncat-batch"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    args = anno_parser(predict_main.__wrapped__).parse_args(
        [expand(a, {**env, "JOB_COMPLETION_INDEX": "7"}) for a in c["args"]]
    )
    assert args.paths == [env["CATALOGUE"]] and parse_shard(args.shard) == (7, 8) and args.workers == 2 and args.quiet


@pytest.mark.parametrize("version", ["1.33.0"])
def test_kubernetes_schema(version):
    kv = pytest.importorskip("kubernetes_validate")
    for d in docs().values():
        kv.validate(d, version, strict=True)
    bad = docs()["Job", "fashioncat-batch"]
    bad["spec"]["template"]["spec"]["containers"][0]["arg"] = ["--shard"]  # a misspelt field: the check can fail
    with pytest.raises(kv.ValidationError, match="'arg' was unexpected"):
        kv.validate(bad, version, strict=True)
