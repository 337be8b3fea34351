"""deploy/ as the checks see it (every container as a Process) and what the code says it should be."""

import copy
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import AliasChoices

from services.kit.run import children, setup_steps
from services.kit.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KAOHE_IMAGE = "kaohe"
# The metrics convention of issue 6, which another change is adding to Settings now; a name here
# is accepted before settings.py has it. Remove it once it is there.
PENDING_SETTINGS = {"KAOHE_METRICS_PORT"}
# Environment of the runtime itself, allowed in the Dockerfile besides Kaohe's settings.
RUNTIME_ENV = {"PATH", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK",
               "PIP_NO_CACHE_DIR"}
# What the third-party images read (their documentation): repository -> allowed names or prefixes.
IMAGE_ENV = {"postgres": ("POSTGRES_", "PGDATA"), "apache/kafka": ("KAFKA_", "CLUSTER_ID")}
SECRET_NAME = re.compile(r"DATABASE_URL|TOKEN|PASSWORD|SECRET")
# An exact version has every part its project's scheme has (PostgreSQL: major.minor; others three).
VERSION_PARTS = {"postgres": 2}
METRICS_PATH = "/metrics"


@dataclass
class Process:
    """One container of the deployment, as the checks need it."""

    where: str  # "compose:intake", "k8s:Deployment/intake", "k8s:Job/kaohe-migrate"
    image: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # name (or the number as text) -> container port
    http_checks: list[tuple[str, int]] = field(default_factory=list)  # (path, port) of probes and health checks
    annotations: dict[str, str] = field(default_factory=dict)
    replicas: int | None = None
    strategy: dict | None = None
    user: str | None = None
    kind: str = "Deployment"
    labels: dict[str, str] = field(default_factory=dict)  # the pod's (Kubernetes)

    @property
    def kaohe(self) -> bool:
        return self.image.split(":")[0].rsplit("/", 1)[-1] == KAOHE_IMAGE

    @property
    def steps(self) -> list[list[str]]:
        return invocations(self.argv)

    @property
    def module(self) -> str | None:
        """The module of a process that runs one `python -m` command, else None."""
        steps = self.steps
        return steps[0][0] if len(steps) == 1 else None


@dataclass
class Deploy:
    compose: dict
    k8s: list[tuple[str, dict]]  # (path relative to deploy/k8s, document)
    kustomizations: dict[str, dict]  # directory relative to deploy/k8s ("." or "migrate") -> document
    dockerfile: str

    def copy(self) -> "Deploy":
        return copy.deepcopy(self)


def load(root: Path = DEPLOY) -> Deploy:
    k8s, kustomizations = [], {}
    for path in sorted((root / "k8s").rglob("*.yaml")):
        rel = path.relative_to(root / "k8s")
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if path.name == "kustomization.yaml":
            kustomizations[str(rel.parent)] = docs[0]
        else:
            k8s += [(str(rel), d) for d in docs]
    return Deploy(yaml.safe_load(interpolate((root / "compose.yaml").read_text())), k8s, kustomizations,
                  (root / "Dockerfile").read_text())


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` as it is with VAR unset (the checks look at the defaults)."""
    def value(m: re.Match) -> str:
        return m.group(3) if m.group(2) in (":-", "-") else ""

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", value, text)


# ---- reading commands and processes --------------------------------------------------------------

def invocations(argv: list[str]) -> list[list[str]]:
    """Every `python -m <module> args...` in a command, also inside an `sh -c` script: [module, *args]."""
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1].startswith("-") and "c" in argv[1]:
        found = []
        for line in argv[2].splitlines():
            words = shlex.split(line, comments=True)
            command: list[str] = []
            for word in [*words, ";"]:
                if word in (";", "&&", "||"):
                    found += invocations(command)
                    command = []
                else:
                    command.append(word)
        return found
    if len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1] == "-m":
        return [argv[2:]]
    return []


def _compose_env(env) -> dict[str, str]:
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in (env or {}).items()}


def _urls(args: list[str]) -> Iterator[tuple[str, int]]:
    for arg in args:
        for url in re.findall(r"https?://[^\s'\"]+", str(arg)):
            parts = urlsplit(url)
            yield parts.path or "/", parts.port or 80


def compose_processes(compose: dict) -> list[Process]:
    processes = []
    for name, svc in compose.get("services", {}).items():
        command = svc.get("command") or []
        argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        ports = {}
        for mapping in svc.get("ports", []):
            target = int(str(mapping).rsplit(":", 1)[-1].split("/")[0]) if not isinstance(mapping, dict) \
                else int(mapping["target"])
            ports[str(target)] = target
        test = (svc.get("healthcheck") or {}).get("test") or []
        replicas = (svc.get("deploy") or {}).get("replicas")
        processes.append(Process(f"compose:{name}", str(svc.get("image", "")), argv,
                                 _compose_env(svc.get("environment")), ports,
                                 list(_urls(test if isinstance(test, list) else [test])),
                                 replicas=replicas, user=svc.get("user"), kind="compose"))
    return processes


def _config_data(docs: list[tuple[str, dict]]) -> dict[tuple[str, str], dict[str, str]]:
    data = {}
    for _, d in docs:
        if d.get("kind") in ("ConfigMap", "Secret"):
            data[(d["kind"], d["metadata"]["name"])] = {**(d.get("data") or {}), **(d.get("stringData") or {})}
    return data


def k8s_processes(docs: list[tuple[str, dict]]) -> list[Process]:
    config = _config_data(docs)
    processes = []
    for _, d in docs:
        if d.get("kind") not in ("Deployment", "Job"):
            continue
        spec = d["spec"]
        pod = spec["template"]
        for c in pod["spec"].get("containers", []):
            env: dict[str, str] = {}
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(config.get(("ConfigMap", source["configMapRef"]["name"]), {}))
                if "secretRef" in source:
                    env.update(config.get(("Secret", source["secretRef"]["name"]), {}))
            env.update({e["name"]: str(e.get("value", "")) for e in c.get("env", [])})
            ports = {}
            for p in c.get("ports", []):
                ports[str(p["containerPort"])] = p["containerPort"]
                if "name" in p:
                    ports[p["name"]] = p["containerPort"]
            checks = []
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = (c.get(probe) or {}).get("httpGet")
                if get:
                    port = ports.get(str(get["port"]), get["port"])
                    checks.append((get.get("path", "/"), int(port) if str(port).isdigit() else -1))
            user = pod["spec"].get("securityContext", {}).get("runAsUser")
            processes.append(Process(
                f"k8s:{d['kind']}/{d['metadata']['name']}", str(c.get("image", "")),
                [*c.get("command", []), *c.get("args", [])], env, ports, checks,
                dict(pod.get("metadata", {}).get("annotations") or {}), spec.get("replicas"),
                spec.get("strategy"), None if user is None else str(user), d["kind"],
                dict(pod.get("metadata", {}).get("labels") or {})))
    return processes


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def dockerfile_process(text: str) -> Process:
    """The image's default command, its ENV and its USER, as a Process."""
    argv, env, user = [], {}, None
    for word, rest in dockerfile_instructions(text):
        if word in ("CMD", "ENTRYPOINT") and rest.startswith("["):
            argv = json.loads(rest)
        elif word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest) if "=" in pair))
        elif word == "USER":
            user = rest
    return Process("Dockerfile", KAOHE_IMAGE, argv, env, user=user, kind="image")


def processes(deploy: Deploy) -> list[Process]:
    return [dockerfile_process(deploy.dockerfile), *compose_processes(deploy.compose), *k8s_processes(deploy.k8s)]


# ---- what the code says ----------------------------------------------------------------------

def setting_names() -> set[str]:
    """Every environment variable Kaohe reads: Settings' aliases and the few os.environ reads."""
    names = set()
    for f in Settings.model_fields.values():
        alias = f.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names |= {c for c in choices if isinstance(c, str) and c.isupper()}
    pattern = re.compile(r"os\.(?:environ\.get\(|environ\[|getenv\()\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
    for path in (ROOT / "services").rglob("*.py"):
        names |= set(pattern.findall(path.read_text()))
    return names


def expected_processes() -> dict[str, str]:
    """module -> name of every long-running process: what `make run` starts, and any API, worker or
    relay module in services/ it does not (yet) start. A relay that runs as its worker's child
    process (its main calls `serve_child`, services/kit/relay_process.py) is deployed with that
    worker, not on its own."""
    found = {child.args[2]: child.name for child in children(Settings())}
    for path in sorted((ROOT / "services").glob("*/*.py")):
        text = path.read_text()
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if path.name == "__main__.py" and re.search(r"\bserve\(", text):
            found.setdefault(module.removesuffix(".__main__"), path.parent.name)
        elif path.name in ("worker.py", "relay.py") and "def main(" in text and "serve_child(" not in text:
            found.setdefault(module, f"{path.parent.name}-{path.stem}")
    return found


def expected_setup() -> list[list[str]]:
    """The set-up steps of `make run`, as [module, *args]."""
    return [step[2:] for step in setup_steps()]


def api_service(module: str | None) -> str | None:
    """"intake" for services.intake: a service package run as an API, with a port setting; else None."""
    name = (module or "").removeprefix("services.")
    return name if module == f"services.{name}" and f"{name}_port" in Settings.model_fields else None


def api_port(p: Process) -> int | None:
    """The port the API process listens on: its setting's default unless its env overrides it."""
    service = api_service(p.module)
    if service is None:
        return None
    override = p.env.get(f"KAOHE_{service.upper()}_PORT")
    return int(override) if override else Settings.model_fields[f"{service}_port"].default
