"""The facility API: groups, members, quotas, invitations and usage over REST.

A hub-managed JupyterHub service (a tornado app, :mod:`.app`). Identity comes from the hub
(``Authorization: token ...`` or the OAuth cookie); authorization from the group tree
(:mod:`afhub.groups.tree`). The API is described by ``openapi.yaml`` in this package.
"""
