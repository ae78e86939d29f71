"""The Voila dashboards behind hub login (``/services/dashboards/``), each kernel acting as
the person viewing it.

A hub-managed service runs Jupyter Server with JupyterHub's single-user extension (the
hub's OAuth: only people the hub let in reach it) and Voila's server extension, and nothing
else (no JupyterLab, no terminals). Voila starts one kernel per page view; before it does,
:func:`.viewer.prelaunch` takes the viewer's own OAuth token from the request and
:class:`.viewer.ViewerKernelManager` starts the kernel with that token as its
``JUPYTERHUB_API_TOKEN`` and with none of the service's own secrets, so the kernel calls the
facility API and the fitting service over HTTP as the viewer; the kernel is usually one
prepared ahead without any token or viewer (:mod:`.pool`) and handed its viewer then.
:class:`.viewer.ViewerAuthorizer` lets a viewer talk only to the kernels of their own page
views. Why it is built this way: ``docs/dashboards.md``.
"""

from pathlib import Path

#: the dashboards' notebooks (``voila-apps/`` of the checkout)
APPS = Path(__file__).resolve().parents[4] / "voila-apps"
#: the stable URLs: ``/services/dashboards/<name>`` renders ``voila-apps/<name>.ipynb``
DASHBOARDS = ("contributions", "fitting", "quota")
