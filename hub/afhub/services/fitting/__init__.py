"""The fitting service: fits as jobs over a REST API (see ``docs/fitting.md``).

Import the parts from their modules (``app``, ``scheduler``, ``jobs``); this package
imports nothing itself. What the worker processes run is in the fitting core
(:mod:`afhub.fitting.worker`, :mod:`afhub.fitting.plan`).
"""
