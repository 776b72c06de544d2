"""docker/: the compose stack, Prometheus config and Dockerfile are consistent with the repository.

Docker itself is not needed: the files are parsed, every path they mount or copy must exist,
the mounts must line up with the paths the configs use inside the containers, and
prometheus.yml must pass `promtool check config` (with the repository's rules) when promtool is
installed.
"""

from __future__ import annotations

import glob
import json
import os
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
    assert service["environment"]["GF_INSTALL_PLUGINS"].split()[0] == "yesoreyeram-infinity-datasource"


def test_grafana_home_is_the_incidents_dashboard_the_docs_name():
    """docs/dashboards.md makes Incidents the home dashboard ("the page that screams"); compose opened the
    global health overview (audit 2026-12)."""
    service = compose()["services"]["grafana"]
    home = host_path(service, service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert json.loads(home.read_text(encoding="utf-8"))["uid"] == "watchtower-incidents"
    assert "Make **Incidents** the home dashboard" in (REPO / "docs" / "dashboards.md").read_text(encoding="utf-8")


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"v?(\d+(?:\.\d+)*)", text).group(1).split("."))


def test_grafana_does_not_report_to_or_poll_grafana_com():
    """Grafana's defaults send usage statistics and poll grafana.com for updates of itself and its plugins: from a
    host beside the PMTA servers, and for nothing a deployment pinned to versions uses."""
    env = compose()["services"]["grafana"]["environment"]
    for key in ("GF_ANALYTICS_REPORTING_ENABLED", "GF_ANALYTICS_CHECK_FOR_UPDATES",
                "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES"):
        assert env.get(key) == "false", key
    assert "GF_INSTALL_PLUGINS" in (REPO / "docker" / "README.md").read_text(encoding="utf-8")


def test_grafana_plugin_is_pinned_to_a_version_this_grafana_runs():
    """GF_INSTALL_PLUGINS without a version installs the newest Infinity at every fresh start. Infinity 3.0
    requires Grafana >= 10.4.8 (its v3.0.0 release notes: "BREAKING: Plugin now requires Grafana 10.4.8 or
    newer"), and its current docs ask for 11.6; 2.x runs on Grafana >= 9.5.15 (v2.4.0 notes)."""
    service = compose()["services"]["grafana"]
    grafana = version(service["image"].rsplit(":", 1)[1])
    plugins = dict(entry.split() if " " in entry.strip() else (entry.strip(), "")
                   for entry in service["environment"]["GF_INSTALL_PLUGINS"].split(","))
    pinned = plugins["yesoreyeram-infinity-datasource"]
    assert pinned, "yesoreyeram-infinity-datasource has no version: the newest one is installed"
    required = (10, 4, 8) if version(pinned) >= (3,) else (9, 5, 15)
    assert grafana >= required, f"Infinity {pinned} needs Grafana >= {required}, the image is {grafana}"


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
    assert first[0] == "FROM" and first[1].startswith("python:3.11-slim")
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


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each `ports:` entry, short or long syntax; "" = every
    interface (Docker's default, 0.0.0.0 and ::)."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
            continue
        text = str(port).split("/")[0]
        if text.startswith("["):  # [::1]:9469:9469
            host, _, rest = text[1:].partition("]:")
            out.append((host, *rest.split(":", 1)))
            continue
        parts = text.split(":")
        out.append((parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", *parts) if len(parts) == 2
                   else ("", "", parts[0]))
    return out


def test_compose_publishes_every_port_on_the_host_loopback_only():
    """Nothing of the stack answers other hosts: Grafana's anonymous viewers can query the Watchtower API
    (recipient timelines) through the Infinity data source, Alertmanager takes silences without auth, and
    Prometheus has no auth either. Reach them remotely through a reverse proxy with auth (docs/security.md)."""
    for name, service in compose()["services"].items():
        for host, host_port, container_port in published(service):
            assert host in ("127.0.0.1", "::1", "localhost"), \
                f"{name}: port {container_port} published on {host or 'every interface'}:{host_port}"


def test_published_port_parser():
    ports = {"ports": ["9090:9090", "127.0.0.1:3000:3000", "[::1]:9093:9093", "8080",
                       {"target": 80, "published": 8081, "host_ip": "127.0.0.1"}]}
    assert published(ports) == [("", "9090", "9090"), ("127.0.0.1", "3000", "3000"), ("::1", "9093", "9093"),
                                ("", "", "8080"), ("127.0.0.1", "8081", "80")]


def test_container_config_reaches_pmta_on_the_host():
    """Inside the container 127.0.0.1 is the container itself, never PMTA's web monitor: the config the
    `watchtower` service mounts must name the host through the name compose maps to the host gateway."""
    from urllib.parse import urlsplit

    service = compose()["services"]["watchtower"]
    config = yaml.safe_load(host_path(service, "/etc/watchtower/watchtower.yml").read_text(encoding="utf-8"))
    host = urlsplit(config["pmta"]["url"]).hostname
    assert host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."), config["pmta"]["url"]
    gateway_names = [entry.split(":")[0] for entry in service.get("extra_hosts", []) if entry.endswith("host-gateway")]
    assert host in gateway_names, (host, gateway_names)



def service_lines(name: str) -> list[str]:
    """One service's lines of docker-compose.yml as written, comments included."""
    lines = (DOCKER / "docker-compose.yml").read_text(encoding="utf-8").splitlines()
    start = lines.index(f"  {name}:")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r" {0,2}\S", lines[i])), len(lines))
    return lines[start:end]


# a short-syntax volume line, commented out or not: `- SOURCE:/etc/watchtower/...[:MODE]`
WATCHTOWER_MOUNT = re.compile(r"\s*(?:#\s*)?-\s*([^\s:#]+):(/etc/watchtower/[^\s:#]+)(?::(\w+))?\s*(?:#.*)?")
OPTIONAL_FILES = {"/etc/watchtower/pmta-api-key", "/etc/watchtower/tls.crt", "/etc/watchtower/tls.key"}


def test_every_file_the_container_config_names_has_a_mount():
    """docker/watchtower.yml suggests pmta.api_key_file and web.tls_cert_file/tls_key_file under /etc/watchtower/
    (commented out), but compose mounted only the config there: uncommenting a key made the container exit 2 in a
    restart loop (`pmta.api_key_file: /etc/watchtower/pmta-api-key does not exist`; review 2026-12). Each file gets a
    read-only mount line in the `watchtower` service, commented out with its key."""
    text = (DOCKER / "watchtower.yml").read_text(encoding="utf-8")
    named = {p.rstrip(".") for p in re.findall(r"/etc/watchtower/[\w./-]+", text)}
    assert OPTIONAL_FILES <= named, named
    mounts = {m.group(2): m.group(3) for line in service_lines("watchtower") if (m := WATCHTOWER_MOUNT.fullmatch(line))}
    for path in sorted(named - {"/etc/watchtower/watchtower.yml"}):
        assert path in mounts, f"watchtower.yml names {path}, which the watchtower service does not mount"
        assert mounts[path] == "ro", f"{path} is mounted {mounts[path] or 'read-write'}"


def test_the_commented_mounts_work_when_uncommented(tmp_path: Path):
    """Uncommenting the lines gives volumes of the `watchtower` service (not a stray list), each a read-only mount of a
    host file outside the repository (no secret in the work tree); compose accepts the result."""
    text = (DOCKER / "docker-compose.yml").read_text(encoding="utf-8")
    uncommented = re.sub(r"^(\s*)# (- \S+:/etc/watchtower/\S+)", r"\1\2", text, flags=re.M)
    assert uncommented != text
    volumes = {v.split(":")[1]: v for v in yaml.safe_load(uncommented)["services"]["watchtower"]["volumes"]}
    for path in sorted(OPTIONAL_FILES):
        source, _, mode = volumes[path].split(":")
        assert mode == "ro" and source.startswith("/") and not source.startswith(str(REPO)), volumes[path]
    cmd = compose_command()
    if cmd is None:
        return
    (tmp_path / "docker-compose.yml").write_text(uncommented, encoding="utf-8")
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "s3cret-for-the-test"}
    out = subprocess.run([*cmd, "--project-directory", str(DOCKER), "-f", str(tmp_path / "docker-compose.yml"),
                          "--profile", "pmta", "config", "-q"], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_readme_gives_the_container_user_the_watchtower_secrets():
    """The mounted files keep their host owner and mode: the README and the compose comment name the image's uid."""
    uid = next(a.split("=", 1)[1] for op, a in dockerfile() if op == "ARG" and a.startswith("WATCHTOWER_UID="))
    readme = " ".join((DOCKER / "README.md").read_text(encoding="utf-8").split())
    assert f"sudo install -m 0400 -o {uid} KEYFILE /etc/watchtower/pmta-api-key" in readme
    assert "pmta.api_key_file: /etc/watchtower/pmta-api-key does not exist" in readme
    comment = " ".join(line.strip().lstrip("#") for line in service_lines("watchtower"))
    assert f"install -m 0400 -o {uid}" in " ".join(comment.split())


def test_readme_names_the_grafana_url_of_the_notification_templates():
    """alertmanager/templates/watchtower.tmpl links dashboards under https://grafana.example.invalid, and compose mounts
    it unchanged: the README's list of what to change for notifications names that line (review 2026-12)."""
    template = (REPO / "alertmanager" / "templates" / "watchtower.tmpl").read_text(encoding="utf-8").splitlines()
    (line,) = [i for i, text in enumerate(template, 1) if 'define "watchtower.grafana_url"' in text]
    readme = " ".join((DOCKER / "README.md").read_text(encoding="utf-8").split())
    assert f"`watchtower.grafana_url`, line {line} of `alertmanager/templates/watchtower.tmpl`" in readme
    assert "https://grafana.example.invalid" in template[line - 1] and "`https://grafana.example.invalid`" in readme
    assert host_path(compose()["services"]["alertmanager"], "/etc/alertmanager/templates/watchtower.tmpl").is_file()


def test_readme_makes_the_alertmanager_secrets_readable_by_its_user():
    """prom/alertmanager runs as nobody (65534): a secret created 0600 by the operator passes `amtool check-config`
    and the config loads, but every Slack/e-mail notification fails at send time ("open .../secrets/slack-webhook-url:
    permission denied"; reproduced with `runuser -u nobody -- prometheus-alertmanager`, review 2026-12)."""
    service = compose()["services"]["alertmanager"]
    assert service["image"].startswith("prom/alertmanager:")  # USER nobody, uid and gid 65534
    config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8"))["global"]
    readme = " ".join((DOCKER / "README.md").read_text(encoding="utf-8").split())
    assert "cd ../alertmanager sudo install -d -m 0750 -g 65534 secrets" in readme
    for key in ("slack_api_url_file", "smtp_auth_password_file"):
        secret = host_path(service, config[key]).relative_to(REPO / "alertmanager")  # secrets/NAME
        assert re.search(rf"\| sudo install -m 0640 -g 65534 /dev/stdin {re.escape(str(secret))};", readme), secret
    assert "sudo chgrp 65534 secrets secrets/*; sudo chmod 0750 secrets; sudo chmod 0640 secrets/*" in readme
    # how to tell: what amtool does not check, and the log line of a failed send
    assert "`amtool check-config` does not open these files" in readme
    assert 'msg="Notify for alerts failed"' in readme
    assert f"open {config['slack_api_url_file']}: permission denied" in readme

def test_watchtower_containers_are_hardened():
    """The daemon needs no capability (port 9469 > 1024, files readable through its group), never gains
    privileges, and writes only its state volume and /tmp (`oneshot` and `demo` temp files)."""
    for name in ("watchtower", "watchtower-demo"):
        service = compose()["services"][name]
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("read_only") is True, name
        assert "/tmp" in service.get("tmpfs", []), name
        assert service.get("init") is True, name  # PID 1 forwards signals and reaps the correlator's children


def test_images_are_pinned():
    """No image floats: a version tag (and the Debian release of the base image), never `latest`."""
    (base,) = [a for op, a in dockerfile() if op == "FROM"]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base), base
    for name, service in compose()["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        assert re.search(r":v?\d+\.\d+\.\d+", image) and not image.endswith(":latest"), f"{name}: {image}"


def compose_command() -> list[str] | None:
    """`docker compose` (v2) or `docker-compose` (v1, Debian's package), whichever parses files here."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=60).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(compose_command() is None, reason="neither docker compose nor docker-compose installed")
def test_compose_file_passes_compose_config(tmp_path: Path):
    """Compose itself accepts the file as shipped, with both profiles (anchors, merge keys, port syntax), v1
    (Debian 12's docker-compose) as v2; the project name comes from docker/.env; Grafana's admin password and the
    host's pmta gid from the environment."""
    cmd = compose_command()
    assert cmd is not None
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "s3cret-for-the-test", "PMTA_GID": "4321"}
    args = [*cmd, "--project-directory", str(DOCKER), "-f", str(DOCKER / "docker-compose.yml"), "--profile", "pmta",
            "--profile", "demo", "config"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert services["watchtower"]["build"]["args"] == {"PMTA_GID": "4321"}
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-for-the-test"
    assert config.get("name", "pmta-watchtower") == "pmta-watchtower"
    del env["GRAFANA_ADMIN_PASSWORD"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode != 0 and "set GRAFANA_ADMIN_PASSWORD" in out.stderr, out.stderr
    assert {"watchtower", "watchtower-demo", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["watchtower"]["read_only"] is True and services["watchtower-demo"]["cap_drop"] == ["ALL"]
