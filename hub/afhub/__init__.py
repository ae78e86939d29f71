"""afhub: an interactive analysis facility built on JupyterHub."""

__version__ = "0.1.0"
