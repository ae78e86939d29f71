"""The group tree: path rules and pure decisions about ancestry and permissions.

This package is part of the pure core: it imports neither the database nor JupyterHub.
"""
