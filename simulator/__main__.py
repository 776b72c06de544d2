"""`python -m simulator`: the `pmta-sim` command, for a checkout run without installing it (as `python -m exporter`)."""

from simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
