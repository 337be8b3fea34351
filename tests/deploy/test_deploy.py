"""deploy/ cannot start here (no container engine): validate it offline. The Kubernetes manifests
against the API schemas (kubernetes-validate --strict), the compose file against the compose
specification (check-jsonschema), the Dockerfile with hadolint, and our own checks against the code
(tests/deploy/checks.py), each also shown to fail on a doctored copy."""

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from services.kit.broker import free_port
from services.kit.settings import Settings
from tests.deploy import checks, model
from tests.deploy.model import DEPLOY, ROOT

KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the manifests promise to fit (docs/operations.md)
BIN = Path(sys.executable).parent


def tool(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    """Run a validator from the venv (pinned in pyproject), offline, with only our configuration."""
    path = BIN / name
    assert path.exists(), f"{path} missing: `make install` (it is in pyproject's dev extra)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    return subprocess.run([str(path), *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def manifests(root: Path = DEPLOY) -> list[Path]:
    """Every Kubernetes manifest (a Kustomization is kustomize's, not the API server's)."""
    return [p for p in sorted((root / "k8s").rglob("*.yaml")) if p.name != "kustomization.yaml"]


@pytest.fixture(scope="module")
def deploy() -> model.Deploy:
    return model.load()


@pytest.fixture
def doctored(deploy) -> model.Deploy:
    return deploy.copy()


def k8s_doc(d: model.Deploy, kind: str, name: str) -> dict:
    return next(doc for _, doc in d.k8s if doc.get("kind") == kind and doc["metadata"]["name"] == name)


def container(d: model.Deploy, kind: str, name: str) -> dict:
    return k8s_doc(d, kind, name)["spec"]["template"]["spec"]["containers"][0]


# ---- the validators ------------------------------------------------------------------------------

def test_kubernetes_manifests_are_valid_in_strict_mode():
    result = tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, "--quiet", *manifests())
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path):
    doc = yaml.safe_load((DEPLOY / "k8s" / "intake-relay.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readOnlyRoot"] = True
    (tmp_path / "relay.yaml").write_text(yaml.safe_dump(doc))
    result = tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, "--quiet", tmp_path / "relay.yaml")
    assert result.returncode != 0 and "readOnlyRoot" in result.stdout + result.stderr


def test_compose_file_follows_the_compose_specification():
    result = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", DEPLOY / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_rejects_an_unknown_start_condition(tmp_path):
    text = (DEPLOY / "compose.yaml").read_text().replace("service_completed_successfully", "service_finished", 1)
    (tmp_path / "compose.yaml").write_text(text)
    result = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", tmp_path / "compose.yaml")
    assert result.returncode != 0


def test_dockerfile_passes_hadolint_at_every_level():
    result = tool("hadolint", "--no-color", "--config", DEPLOY / "hadolint.yaml", DEPLOY / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_warning_and_on_info(tmp_path):
    base = (DEPLOY / "Dockerfile").read_text()
    for extra, rule in (("RUN cd /tmp && ls\n", "DL3003"), ("RUN true\nRUN true\n", "DL3059")):
        (tmp_path / "Dockerfile").write_text(base + extra)
        result = tool("hadolint", "--no-color", "--config", DEPLOY / "hadolint.yaml", tmp_path / "Dockerfile")
        assert result.returncode != 0 and rule in result.stdout, result.stdout


def ignores_without_reason(dockerfile: str) -> list[str]:
    """An inline `# hadolint ignore=` must follow a comment line that says why."""
    lines = dockerfile.splitlines()
    return [line for i, line in enumerate(lines) if "hadolint ignore=" in line
            and not (i and lines[i - 1].lstrip().startswith("#") and "hadolint" not in lines[i - 1])]


def test_every_ignored_hadolint_rule_says_why(deploy):
    assert ignores_without_reason(deploy.dockerfile) == []
    assert ignores_without_reason("FROM python:3.11.14-slim\n# hadolint ignore=DL3008\nRUN apt-get install -y x\n")


# ---- our checks on the real files -----------------------------------------------------------------

@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.__name__)
def test_deploy_is_consistent_with_the_code(deploy, check):
    assert check(deploy) == []


@pytest.fixture(scope="module")
def served():
    """(module, path) -> does that API answer it (anything but 404/405)? Real apps, no lifespan."""
    answers: dict[tuple[str, str], bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # a bootstrap address nobody listens on: /readyz answers 503, which still proves the route
        settings = Settings(data_dir=tmp, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
        apps: dict[str, TestClient] = {}

        def served(module: str, path: str) -> bool:
            if (module, path) not in answers:
                if module not in apps:
                    apps[module] = TestClient(importlib.import_module(f"{module}.app").create_app(settings))
                answers[(module, path)] = apps[module].get(path).status_code not in (404, 405)
            return answers[(module, path)]

        yield served


def test_probes_and_scrape_paths_are_served_on_the_api_port(deploy, served):
    problems = checks.bad_http_checks(deploy, served)
    if problems and all(p.endswith(f"does not serve {model.METRICS_PATH}") for p in problems) \
            and not any(served(m, model.METRICS_PATH) for m in ("services.intake", "services.scoring")):
        pytest.xfail("the metrics work of issue 6 has not landed: no API serves /metrics yet")
    assert problems == []


def test_every_package_services_import_is_in_the_image():
    assert checks.imports_outside_the_image() == []
    dev_only = checks.imports_outside_the_image({"jsonschema": {"services/intake/x.py"}})
    assert len(dev_only) == 1 and dev_only[0].startswith("services/intake/x.py imports jsonschema")


def test_expected_processes_are_what_make_run_starts():
    from services.kit.run import children

    expected = model.expected_processes()
    assert {c.args[2] for c in children(Settings())} <= set(expected)
    assert {"services.scoring.worker", "services.intake.relay", "services.notify"} <= set(expected)
    assert "services.demo" not in expected  # a client of intake's API, not a service


def test_python_m_commands_are_read_from_scripts_too():
    script = ["sh", "-ec", "python -m a.b migrate  # why\npython -m c && python -m d x\necho done\n"]
    assert model.invocations(script) == [["a.b", "migrate"], ["c"], ["d", "x"]]
    assert model.invocations(["python", "-m", "services.intake"]) == [["services.intake"]]
    assert model.invocations(["uvicorn", "app"]) == []


# ---- each check fails on a doctored copy ---------------------------------------------------------

def test_a_module_that_does_not_exist_is_reported(doctored):
    doctored.compose["services"]["intake-relay"]["command"] = ["python", "-m", "services.intake.relai"]
    container(doctored, "Job", "kaohe-migrate")["command"][2] += "python -m services.kit.acces migrate\n"
    problems = checks.unimportable_modules(doctored)
    assert any("compose:intake-relay" in p and "services.intake.relai" in p for p in problems)
    assert any("k8s:Job/kaohe-migrate" in p and "services.kit.acces" in p for p in problems)


def test_a_worker_without_a_deployment_is_reported(doctored):
    del doctored.compose["services"]["notify-worker"]
    doctored.k8s = [(rel, d) for rel, d in doctored.k8s if rel != "notify-worker.yaml"]
    expected = {**model.expected_processes(), "services.audit.worker": "audit-worker"}
    problems = checks.undeployed_processes(doctored, expected)
    assert "services.notify.worker (notify-worker) has no service in compose.yaml" in problems
    assert "services.notify.worker (notify-worker) has no Deployment in deploy/k8s" in problems
    assert "services.audit.worker (audit-worker) has no Deployment in deploy/k8s" in problems


def test_setup_steps_out_of_order_are_reported(doctored):
    c = container(doctored, "Job", "kaohe-migrate")
    lines = c["command"][2].splitlines()
    c["command"][2] = "\n".join([lines[1], lines[0], *lines[2:]])
    problems = checks.setup_mismatch(doctored)
    assert len(problems) == 1 and problems[0].startswith("k8s:Job/kaohe-migrate runs")
    assert checks.setup_mismatch(doctored, [*model.expected_setup(), ["services.audit.setup"]])


def test_an_unknown_setting_is_reported(doctored):
    k8s_doc(doctored, "ConfigMap", "kaohe-settings")["data"]["KAOHE_INTAKE_PROT"] = "8001"
    doctored.compose["services"]["kafka"]["environment"]["ZOOKEEPER_CONNECT"] = "zk:2181"
    doctored.compose["services"]["scoring"]["environment"]["POSTGRES_PASSWORD"] = "x"
    problems = checks.unknown_env(doctored)
    assert "k8s:Deployment/intake: KAOHE_INTAKE_PROT is not a setting in services/kit/settings.py" in problems
    assert "compose:kafka: ZOOKEEPER_CONNECT is not documented for image apache/kafka:4.1.1" in problems
    assert "compose:scoring: POSTGRES_PASSWORD is not a setting in services/kit/settings.py" in problems


def test_a_secret_in_the_configmap_is_reported(doctored):
    k8s_doc(doctored, "ConfigMap", "kaohe-settings")["data"]["DATABASE_URL"] = "postgresql://u:p@db/kaohe"
    assert len(checks.secrets_in_configmaps(doctored)) == 1


def test_more_scoring_workers_than_partitions_are_reported(doctored):
    k8s_doc(doctored, "Deployment", "scoring-worker")["spec"]["replicas"] = 12  # + maxSurge 1 > 12
    doctored.compose["services"]["scoring-worker"]["deploy"] = {"replicas": 7}  # compose has 6 partitions
    problems = checks.scoring_over_partitions(doctored)
    assert "k8s:Deployment/scoring-worker: up to 13 scoring workers (replicas + surge) for 12 partitions" in problems
    assert "compose:scoring-worker: up to 7 scoring workers (replicas + surge) for 6 partitions" in problems


def test_a_second_relay_is_reported(doctored):
    spec = k8s_doc(doctored, "Deployment", "intake-relay")["spec"]
    spec["replicas"], spec["strategy"] = 2, {"type": "RollingUpdate"}
    assert len(checks.relay_not_single(doctored)) == 2


def test_probes_on_a_path_or_port_the_api_does_not_serve_are_reported(doctored, served):
    c = container(doctored, "Deployment", "intake")
    c["readinessProbe"]["httpGet"]["path"] = "/ready"
    c["livenessProbe"]["httpGet"]["port"] = 8002
    doctored.compose["services"]["scoring"]["healthcheck"]["test"][-1] = "http://127.0.0.1:8001/readyz"
    problems = checks.bad_http_checks(doctored, served)
    assert "k8s:Deployment/intake: services.intake does not serve /ready" in problems
    assert "k8s:Deployment/intake: needs a readiness probe on /readyz and a liveness probe on /healthz" in problems
    assert "k8s:Deployment/intake: /healthz checked on port 8002, services.intake listens on 8001" in problems
    assert "compose:scoring: /readyz checked on port 8001, services.scoring listens on 8002" in problems


def test_disagreeing_metrics_ports_are_reported(doctored):
    k8s_doc(doctored, "Deployment", "ranking-worker")["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/port"] = "9999"
    problems = checks.bad_metrics_ports(doctored)
    assert len(problems) == 1 and problems[0].startswith("k8s:Deployment/ranking-worker")


def test_a_url_that_does_not_reach_its_api_is_reported(doctored):
    k8s_doc(doctored, "ConfigMap", "kaohe-settings")["data"]["KAOHE_INTAKE_URL"] = "http://intake:8002"
    doctored.compose["services"]["scoring-worker"]["environment"]["KAOHE_INTAKE_URL"] = "http://scoring:8002"
    problems = checks.bad_service_urls(doctored)
    assert "k8s:Deployment/scoring-worker: KAOHE_INTAKE_URL=http://intake:8002 does not reach services.intake" \
        in problems
    assert "compose:scoring-worker: KAOHE_INTAKE_URL=http://scoring:8002 does not reach services.intake" in problems


def test_weak_hardening_is_reported(doctored):
    doctored.k8s = [(rel, d) for rel, d in doctored.k8s
                    if not (d.get("kind") == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "ranking")]
    container(doctored, "Deployment", "notify-worker")["securityContext"]["readOnlyRootFilesystem"] = False
    del container(doctored, "Job", "kaohe-migrate")["resources"]["limits"]
    problems = checks.weak_hardening(doctored)
    assert "k8s:Deployment/ranking: no autoscaling/v2 HorizontalPodAutoscaler" in problems
    assert any(p.startswith("k8s:Deployment/notify-worker: readOnlyRootFilesystem") for p in problems)
    assert "k8s:Job/kaohe-migrate: resources.limits needs cpu and memory" in problems


def test_a_manifest_missing_from_the_kustomization_is_reported(doctored):
    doctored.kustomizations["."]["resources"].remove("notify.yaml")
    doctored.kustomizations["migrate"]["images"] = []
    problems = checks.kustomization_gaps(doctored)
    assert "k8s/kustomization.yaml does not list notify.yaml" in problems
    assert "both kustomizations must set the same `images`" in problems


def test_loose_image_pins_and_a_root_user_are_reported(doctored):
    doctored.compose["services"]["kafka"]["image"] = "apache/kafka:latest"
    doctored.compose["services"]["postgres"]["image"] = "postgres:17"
    doctored.dockerfile = doctored.dockerfile.replace("python:3.11.14-slim-bookworm AS builder",
                                                      "python:3.11-slim AS builder").replace("USER 10001:10001",
                                                                                             "USER root")
    problems = checks.loose_pins(doctored)
    assert "compose:kafka: image apache/kafka:latest is not pinned to an exact version" in problems
    assert "compose:postgres: image postgres:17 is not pinned to an exact version" in problems
    assert "Dockerfile: FROM python:3.11-slim is not pinned to an exact version" in problems
    assert "Dockerfile: USER 'root' must be a numeric, non-root UID" in problems
