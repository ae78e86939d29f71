"""The notebook face: what notebooks, Voila apps and a laptop's shell use to reach the
facility's services.

HTTP only: it imports neither JupyterHub nor the facility's stores or services.

* :class:`FitClient` (:mod:`afhub.client.fitting`): submit fits to the fitting service, wait,
  read results as a table.
* :mod:`afhub.client.access`: a facility's root from any of its addresses; a token of your
  own from the hub (``afhub login``), kept where the clients find it.
"""

from __future__ import annotations

from afhub.client.fitting import FitClient, FitError, default_url, fitting_url, format_table

__all__ = ["FitClient", "FitError", "default_url", "fitting_url", "format_table"]
