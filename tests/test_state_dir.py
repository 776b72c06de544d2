"""The state directory: created 0700, an existing one of ours tightened, a shared one never changed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest


def test_a_state_dir_open_to_others_that_holds_other_files_is_refused_not_chmodded(tmp_path: Path) -> None:
    """`state_dir: /var/lib` (the `/watchtower` left off), run as root: the daemon chmodded the shared directory to
    0700 (and cleared a sticky bit), cutting every other service off from it. A directory of its own (or a mount
    point's lost+found beside its files) is still tightened."""
    from exporter.state import StateError, private_dir

    shared = tmp_path / "varlib"
    (shared / "postgresql").mkdir(parents=True)
    (shared / "watchtower.db").write_text("")
    shared.chmod(0o1777)
    with pytest.raises(StateError, match=r"state_dir .*varlib is open to other users \(mode 1777\) and holds files "
                                         r"that are not watchtower's: postgresql"):
        private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    own = tmp_path / "own"
    (own / "lost+found").mkdir(parents=True)
    for name in ("watchtower.db", "watchtower.db-wal", "watchtower.lock", "correlator.lock", "correlator-hmac.key",
                 "watchtower.db-wal.orphaned.2", ".watchtower.db.77.tmp"):
        (own / name).write_text("")
    own.chmod(0o755)
    private_dir(own)
    assert stat.S_IMODE(own.stat().st_mode) == 0o700


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_check_config_and_run_refuse_a_shared_state_dir_as_a_config_problem(tmp_path: Path, command: str,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """Exit 2 (systemd's RestartPreventExitStatus: a typo is not retried every 5 s), the directory untouched."""
    from exporter.cli import main
    from tests.conftest import write_config

    shared = tmp_path / "varlib"
    (shared / "postgresql").mkdir(parents=True)
    shared.chmod(0o755)
    config = write_config(tmp_path, state_dir=str(shared))
    assert main([command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"state_dir: {shared} is open to other users (mode 0755) and holds files that are not watchtower's: " \
           "postgresql; not changed" in err, err
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755 and sorted(p.name for p in shared.iterdir()) == ["postgresql"]
