"""Jupyter-server extension of afhub: quotas, fits and contributions inside a person's server.

Enabled on install (``etc/jupyter/jupyter_server_config.d/afhub_server.json``), so every
single-user server the hub starts loads it. It adds ``/afhub/api/quota``, ``/afhub/api/fits``
and ``/afhub/api/contributions`` (:mod:`afhub_server.handlers`), which call the hub's
services over HTTP with the server's own token. The JupyterLab extension ``afhub-lab``
(``extensions/afhub_lab``, built by ``make install``) shows the quota left and a pending
stop in Lab's status bar from ``/afhub/api/quota``. See docs/extension.md.
"""

from __future__ import annotations


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "afhub_server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from afhub_server.handlers import handlers

    web_app = serverapp.web_app
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    serverapp.log.info("afhub_server: /afhub/api/ handlers added")
