"""Jupyter-server extension of afhub (quotas, fits, contributions inside a notebook)."""
