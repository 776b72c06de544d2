"""Per-message timelines: links d/b/t/tq/r/f/rb/rs records into one timeline per recipient of a message.

Modules: keys (hashing), store (schema, migrations, pruning, read pool), ingest (linking and
writes), attribution (vmta of f/rb records), timeline (read queries), models/render/api (HTTP),
sink (the RecordSink the daemon drives).
"""

from correlator.sink import CorrelatorSink

__all__ = ["CorrelatorSink"]
