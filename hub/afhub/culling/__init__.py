"""Idle culling per resource kind: which running server to stop, and why.

Pure core: no JupyterHub, no database. :func:`decide` takes what the hub knows about one
server (its kind, last activity, start time) and a :class:`CullPolicy` (an idle timeout per
kind, a maximum age) and says whether to cull it. :func:`server_kinds` turns the ledger's
open server intervals and the registry's resource kinds into the kind of each running
server. The hub-managed service :mod:`afhub.services.culler` feeds these to
jupyterhub-idle-culler.
"""

from afhub.culling.policy import (
    DEFAULT_KIND,
    CullDecision,
    CullPolicy,
    ServerActivity,
    decide,
    kind_of,
    server_kinds,
)

__all__ = [
    "DEFAULT_KIND",
    "CullDecision",
    "CullPolicy",
    "ServerActivity",
    "decide",
    "kind_of",
    "server_kinds",
]
