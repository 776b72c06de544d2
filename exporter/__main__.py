"""`python -m exporter` and the `watchtower` command (pyproject's console script calls `main` from here).

pydantic looks for plugins (the entry points of every installed distribution: a few ms of each process's start) the
first time it builds a model; watchtower's processes, and the processes they start, want none. Set here, before
exporter.cli is imported, not by exporter.cli: a program that imports watchtower as a library keeps its own plugins.
An operator's own PYDANTIC_DISABLE_PLUGINS wins."""

import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from exporter.cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
