"""A PowerMTA simulator: accounting files, the HTTP management API and exact ground truth.

    scenario.py (YAML events on a time axis) + config.py (topology, files, API options)
    -> model.py (one tick = one simulated second: traffic.py injects, queues.py holds the queue
       state, replies.py / providers.py say how each ISP answers, records.py builds the rows)
    -> writer.py (acct/diag/fbl/bounce CSV files, rotation) and truth.py (exact counts)
    engine.py drives it (as fast as possible, or paced by clock.py); api.py + server.py serve
    /status /queues /vmtas /domains from the live queue state; cli.py is `pmta-sim`; demo.py is
    `watchtower demo`.

Same seed + scenario + start time => byte-identical files, whatever the speed.
"""

import os
import signal
import sys


def interrupted_while_importing(_signum: int, _frame: object) -> None:
    """^C while `pmta-sim` imports (a few tenths of a second, before simulator.cli.main can catch it): exit 130 as
    a shell expects, not a KeyboardInterrupt traceback through the import machinery (exporter.cli does the same)."""
    os._exit(130)  # nothing is open or buffered yet


# Only for the command (`pmta-sim`, or `python -m simulator.cli`, when argv[0] is "-m" while the package imports):
# a library user (a test run) keeps its own ^C. simulator.cli.main() gives Python's handler back.
if (os.path.basename(sys.argv[0] if sys.argv else "") == "pmta-sim" or sys.argv[:1] == ["-m"]) \
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where ^C is ignored (`&`)
    try:
        signal.signal(signal.SIGINT, interrupted_while_importing)
    except ValueError:  # not the main thread: signals are not ours
        pass

from simulator.config import FileSpec, SimConfig  # noqa: E402
from simulator.engine import Simulator, generate  # noqa: E402
from simulator.scenario import Scenario, list_scenarios, load_scenario  # noqa: E402
from simulator.truth import GroundTruth, TruthKey  # noqa: E402

__all__ = ["FileSpec", "GroundTruth", "Scenario", "SimConfig", "Simulator", "TruthKey", "generate",
           "list_scenarios", "load_scenario"]
