"""The housekeeping schedule shared by the daemon and the correlator process."""

from __future__ import annotations

from exporter import maintenance
from exporter.maintenance import MaintainSchedule


def test_a_run_with_more_to_do_is_followed_soon_and_a_finished_one_after_the_interval() -> None:
    now = [100.0]
    schedule = MaintainSchedule(lambda: now[0])
    now[0] += maintenance.MAINTAIN_INTERVAL - 0.01
    assert not schedule.due()
    now[0] += 0.01
    assert schedule.due()
    schedule.ran(more=True)
    now[0] += maintenance.MAINTAIN_BUSY_INTERVAL - 0.01
    assert not schedule.due()
    now[0] += 0.01
    assert schedule.due()
    schedule.ran(more=False)
    now[0] += maintenance.MAINTAIN_BUSY_INTERVAL
    assert not schedule.due()
    now[0] += maintenance.MAINTAIN_INTERVAL - maintenance.MAINTAIN_BUSY_INTERVAL
    assert schedule.due()
