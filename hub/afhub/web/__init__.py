"""afhub's pages in the browser: templates that the hub renders (``templates/``, put in
front of JupyterHub's own by :func:`afhub.hubconfig.configure_templates`) and the facility's
pages (groups, my usage, resources, the join page), a hub-managed service on JupyterHub
OAuth (``python -m afhub.web``, :mod:`.app`) that reaches the hub-side services over HTTP
with the viewer's own token (:mod:`.facility`)."""

from pathlib import Path

#: the templates that the hub renders in front of its own (and the pages render too)
TEMPLATES = Path(__file__).with_name("templates")
#: the pages' own static files (served at ``/services/afhub/static/``)
STATIC = Path(__file__).with_name("static")
