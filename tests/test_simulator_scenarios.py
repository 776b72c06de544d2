"""Each shipped scenario does what its description says, checked against the ground truth and the files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from simulator import SimConfig, Simulator, list_scenarios, load_scenario
from simulator.scenario import ScenarioError, parse_scenario
from tests.conftest import REPO

SHIPPED = ["auth-regression", "bad-list-upload", "baseline", "complaint-creep", "connection-failures", "gmail-throttle",
           "microsoft-s3150-block", "noise", "spamhaus-listing", "yahoo-tss04-pool"]


def slow(rate: float = 2.0, **kw: object) -> SimConfig:
    """Fewer recipients per second: the same events, a fraction of the CPU."""
    return SimConfig(rate=rate, **kw)  # type: ignore[arg-type]


def rows(directory: Path, family: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for p in sorted(directory.glob(f"{family}-*.csv")):
        with p.open(newline="") as f:
            out += list(csv.DictReader(f))
    return out


def test_shipped_scenarios() -> None:
    assert list_scenarios() == SHIPPED
    for name in SHIPPED:
        sim = Simulator(name, None, config=slow())
        truth = sim.generate(2)
        assert truth.injected > 0 and truth.count(type="d") > 0, name


def test_bad_scenarios_are_refused_by_name() -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="unknown reply"):
        parse_scenario("name: x\nevents: [{reply: gmail.nope, probability: 1}]")
    with pytest.raises(ScenarioError, match="exactly one of `probability` or `ramp`"):
        parse_scenario("name: x\nevents: [{reply: gmail.ok}]")
    with pytest.raises(ScenarioError, match="events.0.inject.vmtaa"):
        parse_scenario("name: x\nevents: [{kind: inject, rate: 1, vmtaa: v}]")
    s = parse_scenario("name: x\nduration: 1h30m\nevents: [{at: 90s, until: 2h, reply: gmail.ok, probability: 1}]")
    assert s.duration == 5400 and s.events[0].at == 90 and s.events[0].until == 7200


def test_every_recipient_is_accounted_for() -> None:
    sim = Simulator("baseline", None, config=slow(5))
    truth = sim.generate(20, close=False)
    pending = sim.book.totals()[0]
    assert truth.injected == 6000
    assert truth.count(type=("d", "b")) + pending == truth.injected


def test_ground_truth_equals_what_the_files_hold(tmp_path: Path) -> None:
    truth = Simulator("gmail-throttle", tmp_path, config=slow(4)).generate(25)
    got: Counter[tuple[str, str, str]] = Counter()
    delays: Counter[tuple[str, int]] = Counter()
    nbytes = 0
    for family in ("acct", "diag", "fbl", "bounce"):
        for r in rows(tmp_path, family):
            got[(r["type"], r.get("vmta", ""), r.get("bounceCat", ""))] += 1
            if r["type"] == "d":
                nbytes += int(r["dlvSize"])
    want = Counter({(k.type, k.vmta if k.type in ("d", "b", "t", "tq") else "", k.bounce_cat): 0
                    for k in truth.records})
    for k, n in truth.records.items():
        want[(k.type, k.vmta if k.type in ("d", "b", "t", "tq") else "", k.bounce_cat)] += n
    assert got == want
    assert nbytes == sum(truth.delivered_bytes.values())
    for r in rows(tmp_path, "acct"):
        if r["type"] == "d":
            from datetime import datetime

            fmt = "%Y-%m-%d %H:%M:%S%z"
            seconds = int((datetime.strptime(r["timeLogged"], fmt) - datetime.strptime(r["timeQueued"], fmt))
                          .total_seconds())
            delays[(r["vmta"], seconds)] += 1
    want_delays: Counter[tuple[str, int]] = Counter()
    for (v, _, _, s), n in truth.delivery_delays.items():
        want_delays[(v, s)] += n
    assert delays == want_delays
    assert truth.count(type="t", vmta="vmta-03", klass="throttled") > 50
    assert truth.count(type="t", klass="throttled", vmta=("vmta-01", "vmta-02", "vmta-04"), isp="gmail") == 0


def test_a_slow_vmta_builds_a_queue() -> None:
    scenario = parse_scenario("name: warmup\nevents: [{kind: inject, rate: 8, vmta: vmta-08, mix: {comcast: 1}}]")
    sim = Simulator(scenario, None, config=SimConfig(rate=1, vmta_rate_factor={"vmta-08": 0.5}))
    sim.generate(10, close=False)
    queued = sim.book.by_vmta_isp()
    assert queued[("vmta-08", "comcast")] > 1000  # comcast.net/vmta-08: 5 attempts/s against 8 injected/s
    assert max(n for (v, _), n in queued.items() if v != "vmta-08") < 50
    with pytest.raises(ValueError, match="unknown VMTA"):
        SimConfig(vmta_rate_factor={"vmta-99": 1})


def test_microsoft_block_hits_one_ip() -> None:
    truth = Simulator("microsoft-s3150-block", None, config=slow()).generate(100)
    blocked = truth.by("vmta", "isp", reply="microsoft.blocklist_s3150")
    assert list(blocked) == [("vmta-06", "microsoft")] and blocked[("vmta-06", "microsoft")] > 50
    assert truth.count(type="b", reply="microsoft.blocklist_s3150", klass="blocklisted",
                       bounce_cat="policy-related") == blocked[("vmta-06", "microsoft")]
    assert truth.by("vmta", reply="microsoft.rate_limited_s775") .keys() == {("vmta-06",)}
    assert truth.count(type="d", isp="microsoft", vmta=("vmta-05", "vmta-07", "vmta-08")) > 100


def test_auth_regression_is_one_sender_across_providers() -> None:
    truth = Simulator("auth-regression", None, config=slow(4)).generate(45)
    auth = truth.by("sender", "isp", klass="auth_failure")
    assert {s for s, _ in auth} == {"alerts.bankly.example"}
    assert {i for _, i in auth} == {"gmail", "microsoft", "yahoo"}
    assert truth.count(reply="gmail.auth_unauthenticated", type="b") > 0
    assert truth.count(reply="gmail.dkim_not_pass", type="t") > 0
    assert truth.by("pool", klass="auth_failure").keys() == {("pool-b",)}  # bankly sends through pool-b


def test_bad_list_upload_is_one_job() -> None:
    truth = Simulator("bad-list-upload", None, config=slow()).generate(80)
    job = "fitclub-import-0612"
    unknown = truth.count(job=job, klass="user_unknown")
    sent = truth.count(job=job, type=("d", "b"))
    assert 0.09 < unknown / sent < 0.15
    others = truth.count(klass="user_unknown") - unknown
    assert others / (truth.count(type=("d", "b")) - sent) < 0.015
    assert truth.count(job=job, reply="pmta.no_such_domain", bounce_cat="bad-domain") > 0


def test_yahoo_tss04_is_pool_b_on_connect(tmp_path: Path) -> None:
    truth = Simulator("yahoo-tss04-pool", tmp_path, config=slow(3)).generate(45)
    assert truth.by("pool", "isp", type="tq").keys() == {("pool-b", "yahoo")}
    tq = [r for r in rows(tmp_path, "diag") if r["type"] == "tq"]
    assert len(tq) == truth.count(type="tq") > 20
    assert all(r["rcpt"] == r["orig"] == r["jobId"] == r["header_Message-Id"] == "" for r in tq)
    assert all("[TSS04]" in r["dsnDiag"] and r["queue"].endswith("/" + r["vmta"]) for r in tq)
    assert truth.count(pool="pool-a", isp="yahoo", reply="yahoo.tss04") == 0


def test_healthy_traffic_has_no_alerting_classes() -> None:
    truth = Simulator("baseline", None, config=slow(20)).generate(30)
    assert truth.count(klass=("reputation", "blocklisted", "auth_failure", "tls")) == 0
    assert truth.count(type="tq") == 0
    sent = truth.count(type=("d", "b"))
    assert 0.003 < truth.count(klass=("user_unknown", "bad_domain")) / sent < 0.01


def test_noise_is_recipient_level_and_top_of_hour(tmp_path: Path) -> None:
    truth = Simulator("noise", tmp_path, config=slow(3)).generate(70)
    apple = [r for r in rows(tmp_path, "diag") if "Service unavailable - try again later" in r["dsnDiag"]]
    assert apple and {r["timeLogged"][14:16] for r in apple} <= {"00", "01", "02", "03", "04"}
    assert truth.count(type="t", reply="gmail.mailbox_full") > 0
    assert truth.count(type="t", reply="gmail.recipient_rate") > 0
    assert truth.count(type="tq") == 0
    assert truth.count(klass=("reputation", "blocklisted", "auth_failure")) == 0


def test_complaints_come_later_and_only_from_fbl_providers(tmp_path: Path) -> None:
    cfg = slow(4, fbl_delay=(60, 600))
    truth = Simulator("complaint-creep", tmp_path, config=cfg).generate(60)
    f = rows(tmp_path, "fbl")
    assert len(f) == truth.count(type="f") > 0
    assert {k.isp for k in truth.records if k.type == "f"} <= {"yahoo", "microsoft", "comcast"}
    assert {r["feedbackType"] for r in f} == {"abuse"} and {r["format"] for r in f} == {"arf"}
    assert all(r["header_Message-Id"].startswith("<") for r in f)
    acme = truth.count(type="f", sender="news.acme-shop.example")
    assert acme >= truth.count(type="f") - acme


LIMITED = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
           "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")
"""`python -c LIMITED module args...`: the module run as `python -m`, in 2 GiB of address space: a reader that is no
longer bounded fails the test with a MemoryError instead of filling the machine (/dev/zero reached 13.7 GB in 8 s)."""

BAD_SCENARIOS = ["not-utf8", "fifo", "dev-zero", "empty", "comments-only", "list", "string", "syntax", "deep",
                 "directory", "missing", "name-too-long", "many-problems"]


def bad_scenario(kind: str, tmp_path: Path) -> tuple[str, str]:
    """A `--scenario` argument of the given kind and the one line it must earn (after `prog: `)."""
    p = tmp_path / f"{kind}.yml"
    mapping = ("a YAML mapping of name, description, duration, start, traffic, pools and events "
               "(docs/simulator.md)")
    if kind == "not-utf8":
        p.write_bytes(b"\xff\xfe bad")
        return str(p), f"{p}: line 1: not UTF-8 (byte 0xff at offset 0); save the file as UTF-8"
    if kind == "fifo":
        os.mkfifo(p)
        return str(p), f"{p}: a pipe with nothing written to it; give a YAML scenario file"
    if kind == "dev-zero":
        return "/dev/zero", "/dev/zero: more than 1MiB; a scenario file is at most 1MiB (is this the right file?)"
    if kind == "directory":
        return str(tmp_path), f"{tmp_path}: not a regular file (a directory); give a YAML scenario file"
    if kind == "missing":
        return str(tmp_path / "no" / "such"), f"{tmp_path / 'no' / 'such'}: cannot read: No such file or directory"
    if kind == "name-too-long":  # Path.exists() raised it: a traceback in `watchtower demo`
        return "x" * 300, f"{'x' * 300}: cannot read: File name too long"
    text, message = {
        "empty": ("", f"the file is empty: a scenario is {mapping}"),
        "comments-only": ("# to do\n\n", f"the file holds no keys (only comments or blank lines): a scenario is {mapping}"),
        "list": ("- name: x\n", "expected a mapping at the top level, got a list"),
        "string": ("gmail-throttle\n", "expected a mapping at the top level, got a string"),
        "syntax": ("name: [x\n", "line 2, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' "
                                  "(while parsing a flow sequence started on line 1)"),
        "deep": ("[" * 5000, "not valid YAML: nested too deeply (past Python's recursion limit)"),
        "many-problems": ("name: x\nevents: [" + ", ".join(["1"] * 5000) + "]\n",
                          "; ".join(f"events.{i}: Input should be a valid dictionary or object to extract fields from"
                                    for i in range(3)) + " (and 4997 more problems)"),
    }[kind]
    p.write_text(text)
    return str(p), f"{p}: {message}"


def run_limited(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m module args` in bounded memory; the test fails if it has not ended in 60 s (a hang guard: what these
    tests give is refused at once, and a FIFO nobody writes to would block its reader for ever)."""
    try:
        return subprocess.run([sys.executable, "-c", LIMITED, module, *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m {module} {' '.join(a[:80] for a in args)} hung: not ended in 60 s")


@pytest.mark.parametrize("kind", BAD_SCENARIOS)
def test_a_bad_scenario_file_is_one_line_for_pmta_sim(tmp_path: Path, kind: str) -> None:
    """Review 2026-12-05: a non-UTF-8 file, /dev/zero (`pmta-sim: MemoryError:`), a FIFO (hung), an empty file or
    a list (`FILE: : Input should be a valid dictionary`): one line naming the file and what is wrong, exit 2."""
    arg, message = bad_scenario(kind, tmp_path)
    proc = run_limited("simulator.cli", "generate", "--scenario", arg, "--out", str(tmp_path / "out"))
    # a FIFO nobody writes to is refused at once ("a pipe with nothing written to it"), not waited for
    assert (proc.returncode, proc.stderr) == (2, f"pmta-sim: {message}\n")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_bad_scenario_is_a_scenario_error_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library call says the same (Simulator(path) and load_scenario are how the tests and benchmarks load)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match=r"^\./baseline: cannot read: No such file or directory$"):
        load_scenario("./baseline")  # a path as typed, not the shipped scenario nor `unknown scenario`
    assert load_scenario("baseline").name == "baseline"
    arg, message = bad_scenario("list", tmp_path)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(arg)
    assert str(caught.value) == message
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: x\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScenarioError, match=r"^\S+latin1.yaml: line 2: not UTF-8 \(byte 0xe9 at offset 24\); "):
        Simulator(p, None)
    with pytest.raises(ScenarioError, match="^<scenario>: expected a mapping at the top level, got a number$"):
        parse_scenario("42")


def test_a_scenario_piped_in_is_read() -> None:
    """`--scenario <(envsubst < tmpl.yaml)`: a pipe is read to its end, as the exporter's config is."""
    r, w = os.pipe()
    os.write(w, b"name: piped\nduration: 2m\n")
    os.close(w)
    try:
        assert load_scenario(f"/dev/fd/{r}").name == "piped"
    finally:
        os.close(r)


@pytest.mark.parametrize(("kind", "text", "message"), [
    ("dev-zero", None, "/dev/zero: more than 1MiB; a simulator config file is at most 1MiB (is this the right file?)"),
    ("not-utf8", b"rate: 1\n\xff", "{p}: line 2: not UTF-8 (byte 0xff at offset 8); save the file as UTF-8"),
    ("list", b"- rate: 1\n", "{p}: expected a mapping at the top level, got a list"),
    ("syntax", b"rate: [1\n", "{p}: line 2, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' "
                              "(while parsing a flow sequence started on line 1)"),
    ("invalid", b"rate: -1\nseeds: 2\n", "{p}: rate: Input should be greater than 0; seeds: Extra inputs are not "
                                          "permitted"),
])
def test_a_bad_simulator_config_is_one_line(tmp_path: Path, kind: str, text: bytes | None, message: str) -> None:
    """`pmta-sim --config` read its file as the scenario loader did (`path.read_text`): the same class of defect,
    and a pydantic or PyYAML error printed over several lines."""
    p = tmp_path / "sim.yaml"
    if text is None:
        arg = "/dev/zero"
    else:
        p.write_bytes(text)
        arg = str(p)
    proc = run_limited("simulator.cli", "generate", "--config", arg, "--out", str(tmp_path / "out"))
    assert (proc.returncode, proc.stderr) == (2, f"pmta-sim: {message.format(p=p)}\n")
    assert "Traceback" not in proc.stderr


def test_an_empty_simulator_config_is_the_defaults(tmp_path: Path) -> None:
    """Unlike a scenario (which needs a name), an empty settings file means every default, as before."""
    from simulator.cli import load_sim_config

    p = tmp_path / "sim.yaml"
    p.write_text("# nothing yet\n")
    assert load_sim_config(p) == SimConfig()


@pytest.mark.parametrize(("option", "value", "last"), [
    ("--speed", "1e300", "expected a number greater than 0 and at most 3600, got '1e300'"),
    ("--duration", "1e10", "expected a number greater than 0 and at most 2592000, got '1e10'"),
    ("--speed", "nan", "expected a finite number greater than 0, got 'nan'"),
])
def test_pmta_sim_run_bounds_its_pace_as_watchtower_demo_does(
        tmp_path: Path, option: str, value: str, last: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`pmta-sim run --speed 1e300` ran, writing as fast as the disk took it (`watchtower demo` refused it): both
    commands take their numeric options from exporter.cliargs, with the same bounds."""
    from simulator.cli import main

    with pytest.raises(SystemExit) as done:
        main(["run", "--out", str(tmp_path / "out"), option, value])
    err = capsys.readouterr().err
    assert (done.value.code, err.splitlines()[-1]) == (2, f"pmta-sim run: error: argument {option}: {last}"), err
    assert not (tmp_path / "out").exists()
