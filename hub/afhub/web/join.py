"""The invitation link a person opens in a browser (``join/<token>``): log in through the
hub (and come back), then join the invitation's group through the facility API with the
person's own token. The token is a credential: it never reaches a log (the pages' access
log scrubs ``/join/...``) and the page is never cached."""

from __future__ import annotations

from afhub.web.base import PageHandler
from afhub.web.facility import ServiceRefused


class JoinPage(PageHandler):
    async def get(self, token: str) -> None:
        try:
            member = await self.facility().call("POST", "invitations/redeem", {"token": token})
        except ServiceRefused as exc:
            self.render_page("afhub/join.html", exc.status, member=None, message=exc.message)
            return
        self.render_page("afhub/join.html", member=member, message=None)
