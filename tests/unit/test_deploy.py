"""deploy/, checked without Docker or a cluster: the Kubernetes manifests and compose.yaml against schemas that PyPI
packages ship (nothing is downloaded here), then against Tripmail itself: its settings, commands and routes."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from flower.urls import handlers as flower_handlers
from pydantic import ValidationError
from starlette.routing import Match
from tornado.routing import URLSpec

from api.app import create_app
from tripmail.cli.main import main
from tripmail.config import PLACEHOLDER, Settings, describe_refusal
from tripmail.delivery.smtp import parse_relays
from tripmail.queue import QUEUES as LANE_QUEUES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
PREFIX = "TRIPMAIL_"
# The commands that read the database schema: they must start after `tripmail migrate`.
SCHEMA_READERS = {"api", "worker", "scheduler"}
# Where Python's tempfile writes in the image (the worker's prometheus-client multiprocess directory among others).
IMAGE_TMP = "/tmp"  # noqa: S108 - a path inside the image, not one this test writes to
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
QUEUES = list(LANE_QUEUES.values())

Manifest = dict[str, Any]


def load_manifests() -> list[tuple[str, Manifest]]:
    """Every object in deploy/k8s with its file's name; kustomization.yaml is kustomize's, not the cluster's."""
    return [
        (path.name, document)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


MANIFESTS = load_manifests()
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
COMPOSE_FILE = yaml.safe_load(COMPOSE.read_text())


def of_kind(kind: str) -> list[Manifest]:
    return [manifest for _, manifest in MANIFESTS if manifest["kind"] == kind]


def workloads() -> list[Manifest]:
    """The objects that run pods (Deployments and Jobs)."""
    return of_kind("Deployment") + of_kind("Job")


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def containers() -> list[Manifest]:
    return [container for workload in workloads() for container in pod_spec(workload)["containers"]]


def role(container: Manifest) -> str:
    """The `tripmail` command the container runs: the image's ENTRYPOINT is `tripmail`, its args say the rest."""
    name: str = container["args"][0]
    return name


def deployments_running(command: str) -> list[Manifest]:
    return [d for d in of_kind("Deployment") if any(role(c) == command for c in pod_spec(d)["containers"])]


def deployment_running(command: str) -> Manifest:
    (found,) = deployments_running(command)
    return found


def lanes(argv: list[str]) -> list[str]:
    """The Celery queues a `tripmail worker` command line takes tasks from."""
    queues: list[str] = parse_command(argv).params["queues"]
    return queues


def autoscaled_worker() -> Manifest:
    """The workers the HorizontalPodAutoscaler scales: those on every lane."""
    (found,) = [d for d in deployments_running("worker") if lanes(pod_spec(d)["containers"][0]["args"]) == QUEUES]
    return found


def parse_command(argv: list[str]) -> click.Context:
    """`tripmail ARGV` parsed as the CLI parses it, without running it; a click.UsageError says what is wrong."""
    group: click.Group = main
    context = click.Context(main, info_name="tripmail")
    words = list(argv)
    while True:
        name, *words = words or [""]
        command = group.get_command(context, name)
        if command is None:
            raise click.UsageError(f"tripmail has no command {name!r}", context)
        if not isinstance(command, click.Group):
            return command.make_context(name, words, parent=context)
        group, context = command, click.Context(command, info_name=name, parent=context)


def setting_name(variable: str) -> str | None:
    """The Settings field a TRIPMAIL_* variable sets, or None when Settings has no such field."""
    name = variable.removeprefix(PREFIX).lower()
    return name if variable.startswith(PREFIX) and name in Settings.model_fields else None


def settings_from(variables: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly these variables reads them; every name must be a setting (Settings
    ignores the others, so a misspelt one would silently leave its default in force)."""
    unknown = [variable for variable in variables if setting_name(variable) is None]
    assert unknown == [], f"not TRIPMAIL_ + a tripmail.config.Settings field: {unknown}"
    for variable in [name for name in os.environ if name.startswith(PREFIX)]:
        monkeypatch.delenv(variable)
    fields: dict[str, Any] = {str(setting_name(variable)): value for variable, value in variables.items()}
    return Settings(_env_file=None, **fields)


def configured_variables() -> dict[str, str]:
    """What the ConfigMap and the Secrets put in the environment."""
    variables: dict[str, str] = {}
    for manifest in of_kind("ConfigMap"):
        variables |= manifest.get("data", {})
    for manifest in of_kind("Secret"):
        variables |= manifest.get("stringData", {})
    return variables


def seconds(duration: str) -> float:
    """A compose duration ("1m30s", "660s", "11m") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(number) * unit[name] for number, name in parts)


def dockerfile_stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per FROM."""
    stages: list[list[dict[str, Any]]] = []
    for instruction in DockerfileParser(path=str(DOCKERFILE)).structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def image_uid() -> int:
    (user,) = [i["value"] for i in dockerfile_stages()[-1] if i["instruction"] == "USER"]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: runAsNonRoot can only verify a numeric user"
    return int(user.split(":")[0])


# Kubernetes


@pytest.mark.parametrize("version", [kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version()])
@pytest.mark.parametrize("manifest", [m for _, m in MANIFESTS], ids=[f"{f}:{m['kind']}" for f, m in MANIFESTS])
def test_manifest_matches_the_kubernetes_schema(manifest: Manifest, version: str) -> None:
    # strict: a misspelt field is an error, where the API server would drop it without a word.
    kubernetes_validate.validate(manifest, version, strict=True)


def test_strict_schema_rejects_a_misspelt_field() -> None:
    worker = copy.deepcopy(autoscaled_worker())
    pod_spec(worker)["terminationGracePeriod"] = 660
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        kubernetes_validate.validate(worker, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest_file() -> None:
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(KUSTOMIZATION["resources"]) == sorted(files)


def test_every_container_runs_the_one_image_kustomize_rewrites() -> None:
    (image,) = {container["image"] for container in containers()}
    assert image in {entry["name"] for entry in KUSTOMIZATION["images"]}


@pytest.mark.parametrize("container", containers(), ids=role)
def test_container_runs_a_real_tripmail_command(container: Manifest) -> None:
    assert "command" not in container, "the image's ENTRYPOINT is tripmail; give the command in args"
    parse_command(container["args"])


def test_a_mistyped_command_or_option_is_caught() -> None:
    with pytest.raises(click.UsageError, match="no command"):
        parse_command(["beat"])
    with pytest.raises(click.UsageError, match="--queue"):
        parse_command(["worker", "--queue", "transactional"])
    with pytest.raises(click.UsageError, match="the lanes are transactional, bulk"):
        parse_command(["worker", "--queues", "transactional,mail"])
    with pytest.raises(click.UsageError, match="not a valid integer"):
        parse_command(["api", "--port", "http"])


def filled_in(variables: dict[str, str]) -> dict[str, str]:
    """The variables with each placeholder replaced, as whoever deploys does before applying."""
    return {name: value.replace(PLACEHOLDER, "s3cret") for name, value in variables.items()}


def test_configmap_and_secrets_hold_valid_settings_once_filled_in(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(filled_in(configured_variables()), monkeypatch)  # raises on a value Settings refuses
    parse_relays(settings.smtp_url.get_secret_value())


def test_secrets_applied_as_shipped_are_refused_naming_each_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = configured_variables()
    with_placeholder = [name for name, value in shipped.items() if PLACEHOLDER in value]
    assert with_placeholder, "secret.yaml ships placeholders, not passwords"
    with pytest.raises(ValidationError) as refused:
        settings_from(shipped, monkeypatch)
    assert describe_refusal(refused.value).startswith(f"{', '.join(with_placeholder)} still hold the placeholder")


def test_container_environment_names_settings_and_existing_sources() -> None:
    configmaps = {m["metadata"]["name"] for m in of_kind("ConfigMap")}
    secrets = {m["metadata"]["name"]: m.get("stringData", {}) for m in of_kind("Secret")}
    for container in containers():
        for variable in container.get("env", []):
            assert setting_name(variable["name"]) is not None, variable["name"]
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert reference["key"] in secrets[reference["name"]], reference
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps
            else:
                assert source["secretRef"]["name"] in secrets


def test_pods_run_as_the_image_user_without_root_or_service_links() -> None:
    uid = image_uid()
    for workload in workloads():
        spec = pod_spec(workload)
        context = spec["securityContext"]
        assert (context["runAsNonRoot"], context["runAsUser"]) == (True, uid), workload["metadata"]["name"]
        assert spec["enableServiceLinks"] is False, workload["metadata"]["name"]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_containers_are_read_only_limited_and_can_write_tmp(workload: Manifest) -> None:
    spec = pod_spec(workload)
    empty_dirs = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}, kind
        writable = {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty_dirs}
        assert IMAGE_TMP in writable, "a read-only root needs a writable /tmp (tempfile)"


def test_selectors_match_the_pods_and_services_reach_a_port() -> None:
    pods = {}
    for workload in of_kind("Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), workload["metadata"]["name"]
        pods[workload["metadata"]["name"]] = (labels, pod_spec(workload)["containers"])
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        selected = [cs for labels, cs in pods.values() if selector.items() <= labels.items()]
        assert selected, f"Service {service['metadata']['name']} selects no pods"
        ports = {p.get("name") for cs in selected for c in cs for p in c.get("ports", [])}
        ports |= {p["containerPort"] for cs in selected for c in cs for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, service["metadata"]["name"]


def probe_port(container: Manifest, probe: Manifest) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert isinstance(number, int)
    return number


# The api's probe paths: readiness follows Redis and the database, liveness only the process.
API_PROBE_PATHS = {"livenessProbe": "/livez", "readinessProbe": "/readyz"}


def test_api_probes_ask_livez_and_readyz_on_the_port_it_serves() -> None:
    (container,) = pod_spec(deployment_running("api"))["containers"]
    app = create_app(Settings(_env_file=None))
    served_on = parse_command(container["args"]).params["port"]
    for name, expected in API_PROBE_PATHS.items():
        probe = container[name]
        path = probe["httpGet"]["path"]
        assert path == expected, name
        # A probe is a GET: some route must take it whole (a POST-only route matches it only in part).
        get = {"type": "http", "method": "GET", "path": path, "root_path": ""}
        assert any(route.matches(get)[0] is Match.FULL for route in app.routes), f"the api serves no GET {path}"
        assert probe_port(container, probe) == served_on


def test_api_metrics_are_scraped_on_a_port_of_their_own_that_its_service_does_not_carry() -> None:
    api = deployment_running("api")
    (container,) = pod_spec(api)["containers"]
    env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    metrics_port = int(env["TRIPMAIL_METRICS_PORT"])
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert metrics_port in {port["containerPort"] for port in container["ports"]}
    served_on = parse_command(container["args"]).params["port"]
    assert metrics_port != served_on
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == api["metadata"]["name"]]
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= {"http", served_on}
    # With the setting, the api's own port serves no /metrics.
    app = create_app(Settings(_env_file=None, metrics_port=metrics_port))
    get = {"type": "http", "method": "GET", "path": annotations["prometheus.io/path"], "root_path": ""}
    assert not any(route.matches(get)[0] is Match.FULL for route in app.routes)


def test_flower_probes_ask_a_page_flower_serves_without_login() -> None:
    (container,) = pod_spec(deployment_running("flower"))["containers"]
    served_on = parse_command(container["args"]).params["port"]
    specs = [h if isinstance(h, URLSpec) else URLSpec(*h) for h in flower_handlers]
    for name in ("livenessProbe", "readinessProbe"):
        probe = container[name]
        path = probe["httpGet"]["path"]
        handler = next(spec.handler_class for spec in specs if spec.regex.match(path))
        assert handler is not specs[-1].handler_class, f"{path}: only Flower's catch-all 404 answers it"
        # tornado's @authenticated wraps the method; a probe carries no login.
        assert not hasattr(handler.get, "__wrapped__"), f"{path} asks for Flower's login"
        assert probe_port(container, probe) == served_on


@pytest.mark.parametrize("worker", deployments_running("worker"), ids=lambda d: d["metadata"]["name"])
def test_worker_probes_ask_its_metrics_port(worker: Manifest) -> None:
    (container,) = pod_spec(worker)["containers"]
    env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    metrics_port = int(env["TRIPMAIL_WORKER_METRICS_PORT"])
    for name in ("livenessProbe", "readinessProbe"):
        assert probe_port(container, container[name]) == metrics_port


def test_every_lane_has_workers_and_the_fast_lane_one_of_its_own() -> None:
    served = [lanes(pod_spec(d)["containers"][0]["args"]) for d in deployments_running("worker")]
    assert sorted(served) == sorted([QUEUES, [LANE_QUEUES["transactional"]]])


def test_only_the_api_flower_and_worker_are_probed_over_http() -> None:
    # The others serve no HTTP: a probe there could only ever fail.
    probed = {role(c) for c in containers() if any("httpGet" in c.get(p, {}) for p in PROBES)}
    assert probed <= {"api", "flower", "worker"}


def test_exactly_one_scheduler_even_during_a_rollout() -> None:
    scheduler = deployment_running("scheduler")
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"]["type"] == "Recreate"


def test_the_autoscaler_scales_the_worker_and_nothing_fixes_its_replicas() -> None:
    worker = autoscaled_worker()
    (autoscaler,) = of_kind("HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", worker["metadata"]["name"])
    assert "replicas" not in worker["spec"], "a fixed replicas resets the autoscaler's count on every apply"
    assert autoscaler["spec"]["minReplicas"] >= 1


@pytest.mark.parametrize("worker", deployments_running("worker"), ids=lambda d: d["metadata"]["name"])
def test_worker_grace_period_outlasts_the_longest_task(worker: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(filled_in(configured_variables()), monkeypatch)
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > settings.task_time_limit_s


# compose


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against the compose-spec schema it vendors (--builtin-schema: no download)."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_compose_matches_the_compose_spec() -> None:
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_rejects_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periood:"))
    assert check_compose(broken).returncode != 0


def tripmail_services() -> dict[str, Manifest]:
    """The services built from deploy/Dockerfile, whose command is a `tripmail` command."""
    return {name: service for name, service in COMPOSE_FILE["services"].items() if "build" in service}


@pytest.mark.parametrize("name", sorted(tripmail_services()))
def test_compose_service_runs_a_real_tripmail_command_with_real_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = tripmail_services()[name]
    parse_command(service["command"])
    environment: dict[str, str] = service["environment"]
    assert [variable for variable in environment if setting_name(variable) is None] == []
    # ${...} is compose's interpolation, filled in from the shell that starts it.
    settings_from({v: value for v, value in environment.items() if "${" not in value}, monkeypatch)


def test_compose_publishes_only_the_api_beyond_the_hosts_loopback() -> None:
    for name, service in COMPOSE_FILE["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as HOST_IP:HOST_PORT:CONTAINER_PORT"
            if name != "api":
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every address of the host"


def test_compose_schema_readers_wait_for_migrate() -> None:
    readers = [name for name, service in tripmail_services().items() if service["command"][0] in SCHEMA_READERS]
    assert {tripmail_services()[name]["command"][0] for name in readers} == SCHEMA_READERS
    for name in readers:
        migrate = tripmail_services()[name]["depends_on"].get("migrate", {})
        assert migrate.get("condition") == "service_completed_successfully", name


def compose_workers() -> list[Manifest]:
    return [service for service in tripmail_services().values() if service["command"][0] == "worker"]


@pytest.mark.parametrize("worker", compose_workers(), ids=lambda service: " ".join(service["command"]))
def test_compose_worker_grace_period_outlasts_the_longest_task(
    worker: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(worker["environment"], monkeypatch)
    assert seconds(worker["stop_grace_period"]) > settings.task_time_limit_s


def test_compose_runs_workers_on_every_lane_and_one_on_the_fast_lane_alone() -> None:
    served = [lanes(worker["command"]) for worker in compose_workers()]
    assert sorted(served) == sorted([QUEUES, [LANE_QUEUES["transactional"]]])


def test_compose_restarts_every_long_running_tripmail_service() -> None:
    # A worker can exit on its own when Redis goes away (see bench/reliability.md); only migrate runs once.
    policies = {name: service.get("restart", "no") for name, service in tripmail_services().items()}
    assert policies.pop("migrate") == "no"
    assert set(policies.values()) == {"unless-stopped"}, policies


def test_compose_redis_keeps_every_queued_task() -> None:
    command = COMPOSE_FILE["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"


# Dockerfile


def test_dockerfile_builds_wheels_then_installs_only_them_as_a_numeric_non_root_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: wheels are built in one stage, installed in the final one"
    final = stages[-1]
    installs = [i["value"] for i in final if i["instruction"] == "RUN" and "pip install" in i["value"]]
    assert installs and all("--no-index" in command for command in installs), "the final stage downloads packages"
    assert image_uid() != 0


def test_dockerfile_entrypoint_is_tripmail_and_its_cmd_a_real_command() -> None:
    final = {i["instruction"]: i["value"] for i in dockerfile_stages()[-1]}
    assert json.loads(final["ENTRYPOINT"]) == ["tripmail"]
    parse_command(json.loads(final["CMD"]))


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for instruction in [instruction for stage in dockerfile_stages() for instruction in stage]:
        if instruction["instruction"] == "COPY" and "--from" not in instruction["value"]:
            *sources, _ = [word for word in instruction["value"].split() if not word.startswith("--")]
            assert set(sources) <= allowed, instruction["value"]
