"""docker/Dockerfile, executed without a Docker daemon: what the image would run, run here.

The image is `pip install .` of the files its COPY instructions put in /src, then `watchtower run` with
docker/watchtower.yml, probed by the HEALTHCHECK command. Without a daemon to build it, these tests rebuild
that file set in a temporary directory (the packages `pip install .` would find among the copied files,
nothing else: not the repository's checkout, not the editable install of the venv), start the daemon from
it with the image's config (container paths mapped to temporary ones, the listener on a free loopback
port), and run the HEALTHCHECK's exec-form command against it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.client import HTTP
from tests.conftest import ACCT_HEADER, d_line, free_port, scrape, total

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
IMAGE_CONFIG = "/etc/watchtower/watchtower.yml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text(encoding="utf-8"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD."""
    return json.loads(args[args.index("["):])


def build_context(tmp: Path) -> Path:
    """/src as it is when the Dockerfile's `pip install .` runs: the COPY sources, nothing else."""
    src = tmp / "src"
    src.mkdir()
    workdir = "/"
    for op, args in instructions():
        if op == "WORKDIR":
            workdir = args
        elif op == "RUN" and "pip install" in args:
            assert workdir == "/src", "pip install runs outside /src"
            return src
        elif op == "COPY" and workdir == "/src":
            *sources, dest = args.split()
            assert not any(s.startswith("--") for s in sources), "COPY flags are not emulated"
            for source in sources:
                origin = REPO / source
                target = src / dest / origin.name if dest.endswith("/") or len(sources) > 1 else src / dest
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
    raise AssertionError("no `RUN pip install` in docker/Dockerfile")


def install(src: Path, tmp: Path) -> Path:
    """What `pip install .` puts in site-packages: the packages pyproject's find rule selects in `src`
    (with their data files), and a `watchtower` console script that sees only those and the dependencies."""
    from setuptools import find_packages

    find = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]["find"]
    site = tmp / "site"
    site.mkdir()
    for package in sorted(find_packages(where=str(src), include=find.get("include", ["*"]))):
        if "." not in package:
            shutil.copytree(src / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    script = tmp / "bin" / "watchtower"
    script.parent.mkdir()
    # -I -S: no PYTHONPATH, no current directory, no site (so not the venv's editable install of the checkout)
    script.write_text(f"#!{sys.executable} -IS\nimport sys\nsys.path[:0] = {[str(site), *deps]!r}\n"
                      "if __name__ == '__main__':\n    from exporter.cli import main\n    sys.exit(main())\n")
    script.chmod(0o755)
    return script


def image_dir_mode(path: str) -> int:
    """Mode the image gives a directory its RUN lines create (the build's umask is 022)."""
    mode = None
    for op, args in instructions():
        if op != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if not words or path not in words:
                continue
            if words[0] == "mkdir":
                m = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-m", "--mode")), None)
                mode = int(m, 8) if m else (mode if mode is not None else 0o755)
            elif words[0] == "install" and "-d" in words:
                m = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-m", "--mode")), "755")
                mode = int(m, 8)
            elif words[0] == "chmod":
                mode = int(words[1], 8)
    assert mode is not None, f"the Dockerfile never creates {path}"
    return mode


def image_config(tmp: Path) -> tuple[dict[str, Any], Path]:
    """The config the image copies to /etc/watchtower/watchtower.yml, container paths mapped into `tmp`."""
    copied = next(a.split()[0] for op, a in instructions() if op == "COPY" and a.split()[-1] == IMAGE_CONFIG)
    text = (REPO / copied).read_text(encoding="utf-8")
    text = text.replace("/var/log/pmta", str(tmp / "logs")).replace("/var/lib/watchtower", str(tmp / "state"))
    config = yaml.safe_load(text)
    config["listen"] = f"127.0.0.1:{free_port()}"  # the image binds 0.0.0.0:9469; a test stays on loopback
    if config.get("pmta"):
        config["pmta"]["url"] = f"https://127.0.0.1:{free_port()}"  # nothing listens: no DNS, no real PMTA
    path = tmp / "watchtower.yml"
    path.write_text(yaml.safe_dump(config))
    return config, path


def healthcheck(script: Path, config: Path) -> tuple[list[str], float]:
    """The HEALTHCHECK's command with `watchtower` and the image's config path mapped; and its --timeout."""
    (args,) = [a for op, a in instructions() if op == "HEALTHCHECK"]
    timeout = re.search(r"--timeout=(\d+)s", args)
    command = exec_form(args)
    assert command[0] == "watchtower"
    return [str(script)] + [str(config) if a == IMAGE_CONFIG else a for a in command[1:]], \
        float(timeout.group(1)) if timeout else 30.0


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    return install(build_context(tmp_path), tmp_path)


def test_the_image_daemon_runs_and_its_healthcheck_passes(image: Path, tmp_path: Path):
    """The image's CMD with its config: the daemon serves, the HEALTHCHECK says healthy within its timeout,
    a file named as PMTA names it is read, and the state directory as the image makes it needs no fixing."""
    config, path = image_config(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "state").mkdir(mode=image_dir_mode("/var/lib/watchtower"))
    (tmp_path / "state").chmod(image_dir_mode("/var/lib/watchtower"))
    cmd = [a for op, a in instructions() if op == "CMD"][-1]
    argv = [str(image)] + [str(path) if a == IMAGE_CONFIG else a for a in exec_form(cmd)]
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        check, limit = healthcheck(image, path)
        # the probe gives up on its own (`--timeout`, one line saying why) before Docker kills it at its --timeout,
        # with a second at least for the interpreter's start
        own = float(check[check.index("--timeout") + 1])
        assert own + 1 <= limit, (own, limit)
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None, f"the daemon exited {daemon.returncode}: {log.read_text()[-3000:]}"
            probe = subprocess.run(check, capture_output=True, text=True, timeout=limit + 30, cwd=tmp_path)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stdout + probe.stderr + log.read_text()[-3000:]
            time.sleep(0.5)
        assert probe.stdout.startswith("healthy:"), probe.stdout

        # A file as PMTA names it (<base>-YYYY-MM-DD-NNNN.csv) appearing after the start is read from byte 0.
        (tmp_path / "logs" / "acct-2026-12-03-0000.csv").write_text(
            ACCT_HEADER + "\n" + "".join(d_line(n) + "\n" for n in range(5)), encoding="utf-8")
        url = f"http://{config['listen']}/metrics"
        deadline = time.monotonic() + 30
        while total(scrape(url), "pmta_delivered_total") < 5:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert HTTP.get(f"http://{config['listen']}/healthz", timeout=5).json()["ok"] is True
        # the routes docker/README.md points at answer
        (row,) = [ln for ln in (DOCKER / "README.md").read_text(encoding="utf-8").splitlines()
                  if ln.startswith("| Watchtower: ")]
        routes = [r for r in re.findall(r"`(/[^`]*)`", row) if "..." not in r]
        assert "/metrics" in routes
        for route in routes:
            answer = HTTP.get(f"http://{config['listen']}{route}", timeout=10)
            assert answer.status_code == 200, (route, answer.status_code)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    text = log.read_text()
    assert "state_dir" not in text or "accessible to other users" not in text, text[-3000:]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl (to make a certificate) not installed")
def test_the_healthcheck_follows_tls_and_basic_auth_of_the_config(image: Path, tmp_path: Path):
    """docker/README.md: with web.tls_cert_file the HEALTHCHECK uses https; with web.basic_auth_users a 401
    counts as alive, and WATCHTOWER_HEALTHCHECK_USER/_PASSWORD make it check /healthz itself."""
    import bcrypt

    config, path = image_config(tmp_path)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=pmta-01.example.net", "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt")],
                   check=True, capture_output=True, timeout=60)
    config["web"] = {"tls_cert_file": str(tmp_path / "tls.crt"), "tls_key_file": str(tmp_path / "tls.key"),
                     "basic_auth_users": {"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()}}
    config["correlator"]["enabled"] = False
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "logs").mkdir()
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen([str(image), "run", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT,
                                  cwd=tmp_path)
    check, limit = healthcheck(image, path)

    def probe(**env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WATCHTOWER_HEALTHCHECK_")}
        return subprocess.run(check, capture_output=True, text=True, timeout=limit + 30, cwd=tmp_path,
                              env={**clean, **env})

    try:
        deadline = time.monotonic() + 60
        while (alive := probe()).returncode != 0:
            assert daemon.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, alive.stderr + log.read_text()[-3000:]
            time.sleep(0.5)
        assert alive.stdout.startswith("alive: https://127.0.0.1:"), alive.stdout
        full = probe(WATCHTOWER_HEALTHCHECK_USER="prometheus", WATCHTOWER_HEALTHCHECK_PASSWORD="s3cret")
        assert full.returncode == 0 and full.stdout.startswith("healthy: https://"), full.stdout + full.stderr
        wrong = probe(WATCHTOWER_HEALTHCHECK_USER="prometheus", WATCHTOWER_HEALTHCHECK_PASSWORD="guess")
        assert wrong.returncode == 1 and "401" in wrong.stderr, wrong.stdout + wrong.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def test_the_demo_service_passes_the_healthcheck(image: Path, tmp_path: Path):
    """The compose `watchtower-demo` service: the image's `demo` command on the address its `--listen` names,
    probed by the image's HEALTHCHECK (which reads the image's config for the address)."""
    from tests.test_docker import compose

    service = compose()["services"]["watchtower-demo"]
    config, path = image_config(tmp_path)
    listen = service["command"][service["command"].index("--listen") + 1]
    assert listen.rsplit(":", 1)[1] == "9469" and yaml.safe_load(
        (REPO / "docker" / "watchtower.yml").read_text())["listen"] == listen  # the address the HEALTHCHECK asks
    argv = [str(image)] + [config["listen"] if a == listen else a for a in service["command"]]
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(argv + ["--dir", str(tmp_path / "demo"), "--duration", "90"], stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    check, limit = healthcheck(image, path)
    try:
        deadline = time.monotonic() + 60
        while (probe := subprocess.run(check, capture_output=True, text=True, timeout=limit + 30)).returncode:
            assert demo.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, probe.stderr + log.read_text()[-3000:]
            time.sleep(0.5)
        assert probe.stdout.startswith("healthy:"), probe.stdout
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def test_the_image_installs_every_package_of_the_project(image: Path, tmp_path: Path):
    """`pip install .` in the image finds what pyproject lists: every subcommand's code is importable."""
    find = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    wanted = sorted(p.rstrip("*") for p in find["find"]["include"])
    installed = sorted(p.name for p in (tmp_path / "site").iterdir())
    assert installed == wanted
    # `run` imports pages (the /ui routes) with the correlator on, `hub` imports hub.app
    prelude = image.read_text(encoding="utf-8").splitlines()[2]  # the script's sys.path line
    probe = subprocess.run([sys.executable, "-IS", "-c", f"import sys\n{prelude}\nimport pages, hub.app"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
