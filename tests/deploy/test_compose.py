"""docker-compose.yml is checked without a Docker engine: real entry points, known settings, dependencies."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_stack_has_every_service():
    assert {"redis", "postgres", "migrate", "api", "worker-gpu", "worker-cpu", "flower"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_commands_name_real_entry_points(name):
    cmd = SERVICES[name].get("command")
    if name in ("redis", "postgres"):
        return
    assert cmd, f"{name} has no command"
    if cmd[0] == "celery":
        app_module = cmd[cmd.index("-A") + 1]
        assert hasattr(importlib.import_module(app_module), "app")
        if "worker" in cmd:
            queues = cmd[cmd.index("-Q") + 1].split(",")
            assert set(queues) <= {"gpu", "default"} and cmd[cmd.index("-c") + 1] == "1"
    elif cmd[0] == "uvicorn":
        module, attr = cmd[1].split(":")
        assert hasattr(importlib.import_module(module), attr)
    elif cmd[:3] == ["alembic", "upgrade", "head"]:
        assert (ROOT / "alembic.ini").is_file()
    else:
        pytest.fail(f"unknown entry point {cmd}")


def test_environment_matches_the_settings_classes():
    known = {f"COMPOSER_{f.upper()}" for f in Settings.model_fields}
    for name, svc in SERVICES.items():
        for var in svc.get("environment", {}) or {}:
            if var.startswith("COMPOSER_"):
                assert var in known, f"{name}: {var} is not a setting"


def test_dependencies_and_gpu_reservation():
    for name in ("api", "worker-gpu", "worker-cpu"):
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["count"] == 1
    for name in ("redis", "postgres", "api"):
        assert "healthcheck" in SERVICES[name]
    assert SERVICES["api"]["volumes"][0].split(":")[0] == SERVICES["worker-gpu"]["volumes"][0].split(":")[0]


def compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_docker_compose_config_validates_the_file():
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "neither `docker compose` nor docker-compose is installed (scripts/install.sh installs docker-compose)"
        )
    env = {"COMPOSER_BOOTSTRAP_KEY": "x", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    r = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": env["PATH"]},
    )
    assert r.returncode != 0 and "COMPOSER_BOOTSTRAP_KEY" in r.stderr  # the admin key must be chosen explicitly


def test_the_gpu_worker_gets_a_cuda_torch_and_refuses_to_train_on_the_cpu():
    gpu, api = SERVICES["worker-gpu"], SERVICES["api"]
    assert gpu["build"]["args"]["TORCH_INDEX"].startswith("cu") and gpu["image"] != api["image"]
    assert gpu["environment"]["COMPOSER_DEVICE"] == "cuda"
    assert "ARG TORCH_INDEX" in (ROOT / "Dockerfile").read_text()


def test_every_mounted_path_exists_in_the_image_and_belongs_to_its_user():
    """A named volume on a path the image lacks comes up root-owned, unwritable for the non-root user."""
    docker = (ROOT / "Dockerfile").read_text()
    user = next(line.split()[1] for line in docker.splitlines() if line.startswith("USER "))
    made = next(line for line in docker.splitlines() if "mkdir -p" in line and "chown" in line)
    targets = {
        v.split(":")[1]
        for svc in SERVICES.values()
        if "image" in svc and "adapter-composer" in svc["image"]
        for v in svc.get("volumes", [])
    }
    assert targets and all(t in made.split() for t in targets), (targets, made)
    assert f"chown {user}" in made
