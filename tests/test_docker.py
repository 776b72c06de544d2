"""docker/: the compose stack, Prometheus config and Dockerfile are consistent with the repository.

Docker itself is not needed: the files are parsed, every path they mount or copy must exist,
the mounts must line up with the paths the configs use inside the containers, and
prometheus.yml must pass `promtool check config` (with the repository's rules) when promtool is
installed.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text(encoding="utf-8"))


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "prometheus.yml").read_text(encoding="utf-8"))


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's repository bind mounts (`./x` or `../x`)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DOCKER / source).resolve()
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Map a path inside the container back to the repository through the service's bind mounts."""
    path = PurePosixPath(container_path)
    for target, source in sorted(bind_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def test_compose_services():
    services = compose()["services"]
    assert {"watchtower", "watchtower-demo", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["watchtower-demo"]["command"] == ["demo", "--listen", "0.0.0.0:9469"]
    for name in ("watchtower", "watchtower-demo"):  # either one answers as `watchtower` on the network
        assert "watchtower" in services[name]["networks"]["default"]["aliases"], name
        assert services[name]["profiles"], name


def test_every_repository_path_in_compose_exists():
    for name, service in compose()["services"].items():
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_live_watchtower_mounts_pmta_logs_read_only_and_keeps_state():
    service = compose()["services"]["watchtower"]
    volumes = service["volumes"]
    assert "/var/log/pmta:/var/log/pmta:ro" in volumes
    assert any(v.split(":")[1] == "/var/lib/watchtower" for v in volumes)
    assert host_path(service, "/etc/watchtower/watchtower.yml").is_file()


def test_prometheus_rule_files_resolve_inside_the_container():
    service = compose()["services"]["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in service["command"] if a.startswith("--config.file="))
    assert host_path(service, config_path) == DOCKER / "prometheus.yml"
    base = PurePosixPath(config_path).parent
    for pattern in prometheus_config()["rule_files"]:
        matches = glob.glob(str(host_path(service, str(base / pattern))))
        assert matches, f"rule_files entry {pattern} matches no file"


def test_prometheus_targets_are_compose_services():
    conf = prometheus_config()
    services = compose()["services"]
    targets = [t for job in conf["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "watchtower:9469" in targets
    (am,) = [t for a in conf["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    assert am.split(":")[0] in services


def test_alertmanager_config_is_mounted():
    service = compose()["services"]["alertmanager"]
    config_path = next(a.split("=", 1)[1] for a in service["command"] if a.startswith("--config.file="))
    assert host_path(service, config_path).is_file()


def test_grafana_mounts_match_the_provisioning():
    service = compose()["services"]["grafana"]
    for kind in ("dashboards", "datasources"):
        assert host_path(service, f"/etc/grafana/provisioning/{kind}/watchtower.yml").is_file(), kind
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/watchtower.yml").read_text())["providers"][0]
    dashboards = host_path(service, provider["options"]["path"])
    assert sorted(dashboards.glob("*.json")), dashboards
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(service, home).is_file()
    assert service["environment"]["GF_INSTALL_PLUGINS"] == "yesoreyeram-infinity-datasource"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_config_passes_promtool(tmp_path: Path):
    # The layout Prometheus sees in the container: the config, with the rules directory beside it.
    shutil.copy(DOCKER / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(REPO / "rules", target_is_directory=True)
    result = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rule files found", result.stdout + result.stderr)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text(encoding="utf-8"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_dockerfile():
    instructions = dockerfile()
    first = instructions[0]
    assert first == ("FROM", "python:3.11-slim")
    for op, args in instructions:
        if op == "COPY":
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    ops = dict(instructions)  # last of each
    assert ops["EXPOSE"] == "9469"
    assert "/var/log/pmta" in ops["VOLUME"] and "/var/lib/watchtower" in ops["VOLUME"]
    assert ops["USER"].split(":")[0] not in ("root", "0")
    assert any(op == "RUN" and "groupadd" in args and "pmta" in args for op, args in instructions)
    assert ops["ENTRYPOINT"] == '["watchtower"]'
    assert ops["CMD"] == '["run", "--config", "/etc/watchtower/watchtower.yml"]'


def test_healthcheck_follows_the_config_and_auth():
    """The HEALTHCHECK is `watchtower healthcheck` on the config the image runs (https and auth aware)."""
    ops = dict(dockerfile())
    assert ops["HEALTHCHECK"].endswith('CMD ["watchtower", "healthcheck", "--config", "/etc/watchtower/watchtower.yml", '
                                       '"--timeout", "4"]')
    copied = next(a.split() for op, a in dockerfile() if op == "COPY" and a.endswith("/etc/watchtower/watchtower.yml"))
    config = yaml.safe_load((REPO / copied[0]).read_text(encoding="utf-8"))
    assert config["listen"] == "0.0.0.0:9469"  # inside the container; published on the host's loopback only
    for name in ("watchtower", "watchtower-demo"):
        assert compose()["services"][name]["ports"] == ["127.0.0.1:9469:9469"], name
