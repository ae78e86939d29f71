"""Dask Gateway as a hub-managed afhub service (``dask-gateway``).

- :mod:`.config`: the gateway's settings and the pure builder of dask-gateway-server's
  traitlets config from afhub's settings (ports, persistent database with encryption keys,
  scheduler/worker commands, idle timeout).
- :mod:`.auth`: JupyterHub token authentication that answers 401 with a message for a
  bad token (upstream answers 500).
- :mod:`.backend`: the local backend that charges the usage ledger for every scheduler
  and worker, caps scaling at the group's ``max_dask_cores``, stops clusters whose budget
  is spent, cleans up clusters whose scheduler died, and serves dashboards to their owner
  only.
- ``python -m afhub.services.gateway``: the launcher the hub runs.
"""

#: the service's name in JupyterHub (``/services/dask-gateway/``)
SERVICE_NAME = "dask-gateway"
