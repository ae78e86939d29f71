"""Hub-managed services of afhub (each runs as its own process next to JupyterHub)."""
