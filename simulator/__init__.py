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

from simulator.config import FileSpec, SimConfig
from simulator.engine import Simulator, generate
from simulator.scenario import Scenario, list_scenarios, load_scenario
from simulator.truth import GroundTruth, TruthKey

__all__ = ["FileSpec", "GroundTruth", "Scenario", "SimConfig", "Simulator", "TruthKey", "generate",
           "list_scenarios", "load_scenario"]
