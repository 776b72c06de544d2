"""`python -m exporter` is the `watchtower` command."""

from exporter.cli import main

raise SystemExit(main())
