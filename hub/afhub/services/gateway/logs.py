"""The gateway's access log without credentials.

Upstream's ``AccessLogger`` writes ``request.path_qs``: a request with ``?token=...``
(refused with a 400, but logged first) would put the token in the log. This one writes
the path with the values of credential parameters replaced by ``[secret]``.
"""

from __future__ import annotations

from dask_gateway_server.utils import AccessLogger

from afhub.services.gateway.auth import scrub_url


class ScrubbingAccessLogger(AccessLogger):
    def log(self, request, response, time):
        if response.status >= 500:
            level = self.logger.error
        elif response.status >= 400:
            level = self.logger.warning
        elif request.path.endswith("/api/health"):
            level = self.logger.debug
        else:
            level = self.logger.info
        level(
            "%d %s %s %.3fms",
            response.status,
            request.method,
            scrub_url(request.path_qs),
            time * 1000,
        )
