"""The dashboards' server extension: Voila's ``prelaunch_hook`` and the stable URLs
``/services/dashboards/<name>`` of the dashboards."""

from __future__ import annotations

import signal

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import PeriodicCallback

from afhub.services.kit.lifecycle import ParentWatch
from afhub.web.dashboards import DASHBOARDS
from afhub.web.dashboards.viewer import prelaunch

#: the JupyterLab extensions a dashboard page loads (besides Voila's own)
LAB_EXTENSIONS = (
    "@voila-dashboards/widgets-manager8",
    "@jupyter-widgets/jupyterlab-manager",
    "jupyterlab-plotly",
    "jupyterlab_pygments",
)


class DashboardRedirect(JupyterHandler):
    """``<prefix><name>`` -> Voila's page of ``<name>.ipynb``, with the query string (the
    dashboards read their initial choices from it)."""

    @web.authenticated
    def get(self, name: str) -> None:
        target = url_path_join(self.base_url, "voila/render", f"{name}.ipynb")
        query = self.request.query
        self.redirect(f"{target}?{query}" if query else target)


#: a path with a ``..`` segment, plain or percent-encoded (``%2e``, ``%2f``, ``%5c``): no URL
#: of the dashboards has one, and Voila's static handlers answered some with a 500
#: (GHSA-2q59-h24c-w6fg was a traversal through them)
DOT_DOT = r"(?i:(?:.*(?:/|%2f|%5c))?(?:\.|%2e){2}(?:(?:/|%2f|%5c).*)?)"


class TraversalRefused(web.RequestHandler):
    """404 for any path with a ``..`` segment, before any other handler sees it."""

    def prepare(self) -> None:
        raise web.HTTPError(404)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "afhub.web.dashboards.routes"}]


def _link_jupyter_server_extension(serverapp) -> None:
    """Before Voila reads its configuration: the hook that hands the viewer's token on."""
    serverapp.config.VoilaConfiguration.prelaunch_hook = prelaunch
    # the Lab extensions of the users' servers stay out of the dashboards' pages
    serverapp.config.VoilaConfiguration.extension_allowlist = list(LAB_EXTENSIONS)
    serverapp.config.VoilaConfiguration.extension_denylist = []


def stop_with_the_hub(serverapp, check_seconds: float = 1.0) -> PeriodicCallback:
    """Stop the server (its kernels with it) when the hub that started it is gone, as
    every other service of the hub does (:class:`~afhub.services.kit.lifecycle.ParentWatch`:
    a service left behind by a killed hub holds its port and the restarted hub's own
    cannot start), and at once on SIGINT (Jupyter Server would ask for a confirmation on
    a terminal)."""
    watch = ParentWatch()

    def check() -> None:
        if watch.gone:
            serverapp.log.info("the dashboards stop: the hub that started them is gone")
            periodic.stop()
            serverapp.stop()

    signal.signal(signal.SIGINT, lambda *_: serverapp.stop(from_signal=True))
    periodic = PeriodicCallback(check, check_seconds * 1000)
    periodic.start()
    return periodic


def _load_jupyter_server_extension(serverapp) -> None:
    stop_with_the_hub(serverapp)
    names = "|".join(DASHBOARDS)
    pattern = url_path_join(serverapp.web_app.settings["base_url"], f"({names})/?")
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [(base + DOT_DOT, TraversalRefused), (pattern, DashboardRedirect)],
    )
