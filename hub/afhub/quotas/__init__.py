"""Quotas: accounting periods, charges and the pure admission decision.

This package is part of the pure core: it imports neither the database nor JupyterHub.
"""
