"""afhub's pages in the browser: templates that the hub renders (``templates/``, put in
front of JupyterHub's own by :func:`afhub.hubconfig.configure_templates`) and the facility's
pages, which reach the hub-side services over HTTP with the viewer's identity."""

from pathlib import Path

#: the templates that the hub renders in front of its own
TEMPLATES = Path(__file__).with_name("templates")
