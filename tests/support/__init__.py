"""Helpers shared by tests and benchmarks (never shipped in the product): throw-away
databases (``databases``) and a facility-sized history (``scale``)."""
