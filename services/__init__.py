"""Kaohe services: contracts (events), plumbing (kit) and one package per service."""

import sys

# httpx's package imports its command line (`httpx._main`: click, rich, pygments) whenever those
# happen to be installed, as they are here for the test tools. No service runs that command line:
# leaving it out keeps about 80 modules and 4 MB out of every process (the scoring worker's peak
# at a million events is within a few MB of its 300 MB target: docs/performance.md).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
