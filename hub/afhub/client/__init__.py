"""The notebook face: what notebooks and Voila apps use to reach the facility's services.

HTTP only: it imports neither JupyterHub nor the facility's stores or services.

* :class:`FitClient` (:mod:`afhub.client.fitting`): submit fits to the fitting service, wait,
  read results as a table.
"""

from __future__ import annotations

from afhub.client.fitting import FitClient, FitError, default_url, format_table

__all__ = ["FitClient", "FitError", "default_url", "format_table"]
