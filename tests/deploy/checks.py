"""Consistency checks of deploy/ against the code: each takes the parsed deployment and returns the
problems it finds (empty: none), so a test can also run it on a doctored copy and see it fail."""

import ast
import re
import sys
import tomllib
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from importlib.util import find_spec
from urllib.parse import urlsplit

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.kit.settings import Settings
from tests.deploy.model import (
    IMAGE_ENV,
    METRICS_PATH,
    PENDING_SETTINGS,
    ROOT,
    RUNTIME_ENV,
    SECRET_NAME,
    VERSION_PARTS,
    Deploy,
    Process,
    api_port,
    api_service,
    compose_processes,
    dockerfile_instructions,
    dockerfile_process,
    expected_processes,
    expected_setup,
    k8s_processes,
    processes,
    setting_names,
)

# ---- the checks --------------------------------------------------------------------------------

def unimportable_modules(deploy: Deploy) -> list[str]:
    """Every `python -m X` named anywhere must be a module of this checkout."""
    problems = []
    for p in processes(deploy):
        for module, *_ in p.steps:
            try:
                spec = find_spec(module)
            except ModuleNotFoundError:
                spec = None
            if spec is None:
                problems.append(f"{p.where}: python -m {module}: no such module")
    return problems


def undeployed_processes(deploy: Deploy, expected: dict[str, str] | None = None) -> list[str]:
    """Every API, worker and relay needs a compose service and a Kubernetes Deployment."""
    expected = expected_processes() if expected is None else expected
    ps = processes(deploy)
    in_compose = {p.module for p in ps if p.kind == "compose"}
    in_k8s = {p.module for p in ps if p.kind == "Deployment"}
    problems = []
    for module, name in sorted(expected.items()):
        if module not in in_compose:
            problems.append(f"{module} ({name}) has no service in compose.yaml")
        if module not in in_k8s:
            problems.append(f"{module} ({name}) has no Deployment in deploy/k8s")
    return problems


def setup_mismatch(deploy: Deploy, expected: list[list[str]] | None = None) -> list[str]:
    """The migration job (compose and Kubernetes) runs exactly `make run`'s set-up steps, in order."""
    expected = expected_setup() if expected is None else expected
    jobs = [p for p in processes(deploy) if p.where in ("compose:migrate", "k8s:Job/kaohe-migrate")]
    problems = [] if len(jobs) == 2 else ["expected compose service `migrate` and Job `kaohe-migrate`"]
    for p in jobs:
        if p.steps != expected:
            problems.append(f"{p.where} runs {p.steps}, services/kit/run.py sets up with {expected}")
    return problems


def unknown_env(deploy: Deploy, known: set[str] | None = None) -> list[str]:
    """Kaohe containers set only Kaohe's settings; others only what their image documents."""
    known = (setting_names() | PENDING_SETTINGS) if known is None else known
    problems = []
    for p in processes(deploy):
        for name in sorted(p.env):
            if p.kind == "image":
                ok = name in known or name in RUNTIME_ENV
            elif p.kaohe:
                ok = name in known
            else:
                repo = p.image.split(":")[0].removeprefix("docker.io/").removeprefix("library/")
                ok = any(name.startswith(prefix) for prefix in IMAGE_ENV.get(repo, ()))
            if not ok:
                problems.append(f"{p.where}: {name} is not a setting in services/kit/settings.py"
                                if p.kaohe else f"{p.where}: {name} is not documented for image {p.image}")
    return problems


def secrets_in_configmaps(deploy: Deploy) -> list[str]:
    """Database URLs, tokens and passwords belong in a Secret, not a ConfigMap."""
    return [f"k8s:{rel}: ConfigMap {d['metadata']['name']} holds {key}; put it in the Secret"
            for rel, d in deploy.k8s if d.get("kind") == "ConfigMap"
            for key in d.get("data") or {} if SECRET_NAME.search(key)]


def _surge(p: Process) -> int:
    rolling = (p.strategy or {}).get("rollingUpdate") or {}
    if p.kind != "Deployment" or (p.strategy or {}).get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    surge = rolling.get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return -(-int(surge[:-1]) * (p.replicas or 1) // 100)
    return int(surge)


def scoring_over_partitions(deploy: Deploy) -> list[str]:
    """Scoring workers (with a rollout's surge) <= partitions: members beyond them get no partition."""
    problems = []
    for p in processes(deploy):
        if p.module != "services.scoring.worker":
            continue
        partitions = int(p.env.get("KAOHE_TOPIC_PARTITIONS") or Settings.model_fields["topic_partitions"].default)
        most = (p.replicas or 1) + _surge(p)
        if most > partitions:
            problems.append(f"{p.where}: up to {most} scoring workers (replicas + surge) for {partitions} partitions")
    return problems


def relay_not_single(deploy: Deploy) -> list[str]:
    """Intake's relay: one replica and Recreate (two relays publish every row twice)."""
    problems = []
    for p in processes(deploy):
        if p.module != "services.intake.relay":
            continue
        if (p.replicas or 1) != 1:
            problems.append(f"{p.where}: {p.replicas} relays; exactly one per intake database")
        if p.kind == "Deployment" and (p.strategy or {}).get("type") != "Recreate":
            problems.append(f"{p.where}: strategy must be Recreate (a rolling update runs two relays)")
    return problems


def bad_http_checks(deploy: Deploy, served: Callable[[str, str], bool]) -> list[str]:
    """Probes, health checks and metrics annotations name a path the process serves, on its port."""
    problems = []
    for p in processes(deploy):
        port = api_port(p)
        if p.kaohe and port is None and p.http_checks:
            problems.append(f"{p.where}: HTTP checks on a process that serves no HTTP API")
        if port is None:
            continue
        checks = list(p.http_checks)
        if p.annotations.get("prometheus.io/scrape") == "true":
            checks.append((p.annotations.get("prometheus.io/path", METRICS_PATH),
                           int(p.annotations.get("prometheus.io/port", -1))))
        if p.kind == "Deployment" and not {"/readyz", "/healthz"} <= {path for path, _ in p.http_checks}:
            problems.append(f"{p.where}: needs a readiness probe on /readyz and a liveness probe on /healthz")
        for path, check_port in checks:
            if check_port != port:
                problems.append(f"{p.where}: {path} checked on port {check_port}, {p.module} listens on {port}")
            if not served(p.module, path):
                problems.append(f"{p.where}: {p.module} does not serve {path}")
        if p.ports and port not in p.ports.values():
            problems.append(f"{p.where}: exposes {sorted(set(p.ports.values()))}, {p.module} listens on {port}")
    return problems


def bad_metrics_ports(deploy: Deploy) -> list[str]:
    """A worker's scrape annotation, KAOHE_METRICS_PORT and its `metrics` containerPort agree."""
    problems = []
    for p in processes(deploy):
        if p.kind != "Deployment" or api_service(p.module):
            continue
        port = p.ports.get("metrics")
        wanted = {p.annotations.get("prometheus.io/port"), p.env.get("KAOHE_METRICS_PORT"), port and str(port)}
        if len(wanted) != 1 or None in wanted or p.annotations.get("prometheus.io/scrape") != "true":
            problems.append(f"{p.where}: scrape annotation port, KAOHE_METRICS_PORT and the `metrics` containerPort "
                            f"must be set and equal (got {sorted(map(str, wanted))})")
        if p.annotations.get("prometheus.io/path") != METRICS_PATH:
            problems.append(f"{p.where}: prometheus.io/path must be {METRICS_PATH}")
    return problems


def _service_targets(deploy: Deploy) -> dict[str, tuple[int, Process | None]]:
    """Kubernetes Service name -> (its port, the one API process its selector and targetPort reach)."""
    pods = k8s_processes(deploy.k8s)
    targets = {}
    for _, d in deploy.k8s:
        if d.get("kind") != "Service":
            continue
        selector = d["spec"].get("selector") or {}
        matched = [p for p in pods if selector and selector.items() <= p.labels.items()]
        for port in d["spec"]["ports"]:
            behind = matched[0] if len(matched) == 1 else None
            if behind is not None and behind.ports.get(str(port.get("targetPort", port["port"]))) != api_port(behind):
                behind = None
            targets[d["metadata"]["name"]] = (port["port"], behind)
    return targets


def bad_service_urls(deploy: Deploy) -> list[str]:
    """KAOHE_INTAKE_URL and KAOHE_SCORING_URL reach that API, in compose and in Kubernetes."""
    problems = []
    compose = {p.where.split(":", 1)[1]: p for p in compose_processes(deploy.compose)}
    services = _service_targets(deploy)
    for p in processes(deploy):
        for setting, module in (("KAOHE_INTAKE_URL", "services.intake"), ("KAOHE_SCORING_URL", "services.scoring")):
            url = p.env.get(setting)
            if not url or not p.kaohe:
                continue
            parts = urlsplit(url)
            if p.kind == "compose":
                target = compose.get(parts.hostname or "")
                ok = target is not None and target.module == module and api_port(target) == parts.port
            else:
                port, behind = services.get(parts.hostname or "", (None, None))
                ok = behind is not None and behind.module == module and port == parts.port
            if not ok:
                problems.append(f"{p.where}: {setting}={url} does not reach {module}")
    return problems


def weak_hardening(deploy: Deploy) -> list[str]:
    """Every Kubernetes pod: non-root, read-only root with /tmp writable, resources, no escalation;
    every API Deployment: a Service and an autoscaling/v2 HorizontalPodAutoscaler."""
    problems = []
    hpas = {d["spec"]["scaleTargetRef"]["name"] for _, d in deploy.k8s
            if d.get("kind") == "HorizontalPodAutoscaler" and d.get("apiVersion") == "autoscaling/v2"}
    services = _service_targets(deploy)
    served_by_service = {behind.where for _, behind in services.values() if behind is not None}
    for _, d in deploy.k8s:
        if d.get("kind") not in ("Deployment", "Job"):
            continue
        where = f"k8s:{d['kind']}/{d['metadata']['name']}"
        pod = d["spec"]["template"]["spec"]
        if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
            problems.append(f"{where}: securityContext.runAsNonRoot must be true")
        for c in pod["containers"]:
            sc = c.get("securityContext") or {}
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: readOnlyRootFilesystem true and allowPrivilegeEscalation false, please")
            if "/tmp" not in {m["mountPath"] for m in c.get("volumeMounts", [])}:
                problems.append(f"{where}: a read-only root needs a writable /tmp (emptyDir)")
            resources = c.get("resources") or {}
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(kind) or {}):
                    problems.append(f"{where}: resources.{kind} needs cpu and memory")
    for p in k8s_processes(deploy.k8s):
        if p.kind == "Deployment" and api_service(p.module):
            name = p.where.split("/", 1)[1]
            if name not in hpas:
                problems.append(f"{p.where}: no autoscaling/v2 HorizontalPodAutoscaler")
            if p.where not in served_by_service:
                problems.append(f"{p.where}: no Service reaches its HTTP port")
    return problems


def kustomization_gaps(deploy: Deploy) -> list[str]:
    """The root kustomization lists every manifest but the set-up job, which migrate/ lists alone."""
    problems = []
    files = {rel for rel, _ in deploy.k8s}
    root = set((deploy.kustomizations.get(".") or {}).get("resources") or [])
    migrate = set((deploy.kustomizations.get("migrate") or {}).get("resources") or [])
    for rel in sorted(files):
        if rel.startswith("migrate/"):
            if rel.removeprefix("migrate/") not in migrate:
                problems.append(f"k8s/migrate/kustomization.yaml does not list {rel}")
        elif rel not in root:
            problems.append(f"k8s/kustomization.yaml does not list {rel}")
    for listed in sorted(root - files) + sorted(f"migrate/{m}" for m in migrate if f"migrate/{m}" not in files):
        problems.append(f"a kustomization lists {listed}, which does not exist")
    images = [k.get("images") for k in deploy.kustomizations.values()]
    if len(images) != 2 or images[0] != images[1]:
        problems.append("both kustomizations must set the same `images`")
    return problems


def _pinned(image: str) -> bool:
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    parts = VERSION_PARTS.get(repo.rsplit("/", 1)[-1], 3)
    return bool(re.match(r"\d+" + r"\.\d+" * (parts - 1) + r"($|-)", tag))


def loose_pins(deploy: Deploy) -> list[str]:
    """Every image has an exact version; the image's UID is the one compose and Kubernetes run as."""
    problems = []
    for word, rest in dockerfile_instructions(deploy.dockerfile):
        if word == "FROM" and not _pinned(rest.split()[0]):
            problems.append(f"Dockerfile: FROM {rest.split()[0]} is not pinned to an exact version")
    image_user = dockerfile_process(deploy.dockerfile).user or ""
    if not re.fullmatch(r"[1-9]\d*(:\d+)?", image_user):
        problems.append(f"Dockerfile: USER {image_user!r} must be a numeric, non-root UID")
    uid = image_user.split(":")[0]
    for p in [*compose_processes(deploy.compose), *k8s_processes(deploy.k8s)]:
        if not _pinned(p.image):
            problems.append(f"{p.where}: image {p.image} is not pinned to an exact version")
        if p.kaohe and (p.user or uid).split(":")[0] != uid:
            problems.append(f"{p.where}: runs as {p.user}, the image's user is {uid}")
    return problems


CHECKS = [unimportable_modules, undeployed_processes, setup_mismatch, unknown_env, secrets_in_configmaps,
          scoring_over_partitions, relay_not_single, bad_metrics_ports, bad_service_urls, weak_hardening,
          kustomization_gaps, loose_pins]



# ---- the image's packages ----------------------------------------------------------------------

def runtime_distributions(requirements: list[str] | None = None) -> set[str]:
    """The distributions the image installs: pyproject's [project] dependencies and all they
    require (with their extras), as installed in this venv, by normalised name."""
    if requirements is None:
        requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [(Requirement(r), "") for r in requirements]
    found: set[str] = set()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        req, extra = todo.pop()
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if (req.marker and not req.marker.evaluate({"extra": extra})) or key in seen:
            continue
        seen.add(key)
        found.add(key[0])
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            continue
        # a requirement's marker says which extra (if any) pulls it in: evaluated when popped
        todo += [(Requirement(r), wanted) for wanted in ["", *key[1]] for r in requires]
    return found


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files of services/ that import it (standard library left out)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "services" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def imports_outside_the_image(imports: dict[str, set[str]] | None = None,
                              runtime: set[str] | None = None) -> list[str]:
    """Every package services/ imports is installed in the image (not only in the dev extra)."""
    imports = third_party_imports() if imports is None else imports
    runtime = runtime_distributions() if runtime is None else runtime
    providers = packages_distributions()
    return [f"{min(files)} imports {module}, which pyproject's [project] dependencies do not install"
            for module, files in sorted(imports.items())
            if not {canonicalize_name(d) for d in providers.get(module, [])} & runtime]
