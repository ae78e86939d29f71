"""Resources: what I may use (the registry as the profiles show it to me) and how many of
each resource's devices are free now."""

from __future__ import annotations

from afhub.web.base import PageHandler


class ResourcesPage(PageHandler):
    async def get(self) -> None:
        listing = await self.facility().get("resources")
        self.render_page("afhub/resources.html", resources=listing["resources"])
