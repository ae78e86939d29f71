"""What every fitting-service handler shares: the service kit's JSON handler (identity from
the hub through ``HubOAuth``, JSON errors that never carry a stack trace) with the fitting
service's own body limit, stores and scheduler."""

from __future__ import annotations

import logging
from typing import Any

from afhub.services.fitting.config import FittingService
from afhub.services.fitting.scheduler import Scheduler
from afhub.services.kit.handlers import JsonHandler
from afhub.stores.facade import Stores
from afhub.stores.fitting import FitStore


class FittingHandler(JsonHandler):
    """Base class: ``self.user`` is the caller's name, ``self.fits`` the job store."""

    #: the refusals name the facility API, as they did when these handlers were built on it
    service_title = "the facility API"
    service_log = logging.getLogger("afhub.fitting")

    @property
    def stores(self) -> Stores:
        return self.settings["afhub_stores"]

    @property
    def fits(self) -> FitStore:
        return self.settings["afhub_fits"]

    @property
    def scheduler(self) -> Scheduler:
        return self.settings["afhub_scheduler"]

    @property
    def config(self) -> FittingService:
        return self.settings["afhub_fitting"]

    @property
    def user(self) -> str:
        return self.current_user["name"]

    def max_body_bytes(self) -> int:
        return self.config.max_body_bytes

    def send_invalid(self, message: str, field: str | None, status: int = 400) -> None:
        """A request that cannot be served: the message names the problem (and the field)."""
        self.send({"error": message, "status": status, "field": field}, status)

    def links(self, job_id: str) -> dict[str, Any]:
        base = f"{self.settings['afhub_prefix']}api/jobs/{job_id}"
        return {"self": base, "results": f"{base}/results"}
