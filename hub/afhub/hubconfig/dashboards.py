"""The Voila dashboards (``/services/dashboards/``) as a hub-managed service.

The service logs people in through the hub's OAuth; the OAuth tokens it gets for its
viewers may do no more than the dashboards need (call the facility API and the fitting
service as the viewer), and each dashboard's kernel gets its viewer's token
(:mod:`afhub.web.dashboards`; why: ``docs/dashboards.md``).
"""

from __future__ import annotations

import sys

from traitlets.config import Config

from afhub.settings import FacilitySettings

#: name of the dashboards service (served at ``/services/dashboards/``)
DASHBOARDS_SERVICE = "dashboards"
#: the most a viewer's token held by a dashboard's kernel may do: reach the facility API
#: and the fitting service (which act only as far as the viewer may) and read the viewer's
#: own hub model
VIEWER_TOKEN_SCOPES = (
    "access:services!service=facility",
    "access:services!service=fitting",
    "read:users:name!user",
)


def configure(c: Config, settings: FacilitySettings) -> None:
    """Add the dashboards service and its link in the hub's navigation bar."""
    from afhub.hubconfig import SERVICE_COOKIE_OPTIONS, _add_service, add_nav_link

    root = settings.public_url
    service = {
        "name": DASHBOARDS_SERVICE,
        "url": f"http://127.0.0.1:{settings.dashboards_port}",
        "command": [
            sys.executable,
            "-m",
            "afhub.web.dashboards",
            f"--ViewerKernelManager.pool_size={settings.dashboards_kernel_pool}",
        ],
        "environment": {
            "AFHUB_FACILITY_URL": f"{root}services/facility/",
            "AFHUB_FITTING_URL": f"{root}services/fitting/",
            "JUPYTERHUB_COOKIE_OPTIONS": SERVICE_COOKIE_OPTIONS,
            # load only the extensions afhub.web.dashboards names
            "JUPYTERHUB_SINGLEUSER_LOAD_OTHER_EXTENSIONS": "0",
        },
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": list(VIEWER_TOKEN_SCOPES),
    }
    _add_service(c, service)
    add_nav_link(c, "Dashboards", f"{settings.base_url}services/{DASHBOARDS_SERVICE}/")
