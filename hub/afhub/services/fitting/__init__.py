"""The fitting service: fits as jobs over a REST API (see ``docs/fitting.md``).

Import the parts from their modules (``app``, ``scheduler``, ``jobs``); this package
imports nothing itself, so worker processes can import ``work`` cheaply.
"""
