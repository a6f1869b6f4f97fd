"""``python -m ingestor``: the same as ``monitorx ingest``."""

from ingestor.cli import main

raise SystemExit(main())
