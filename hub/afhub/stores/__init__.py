"""Persistence for groups, memberships, quotas, invitations and the usage ledger.

One database through SQLAlchemy: SQLite by default, PostgreSQL in production. The store
classes load facts, hand them to the pure core (:mod:`afhub.groups`, :mod:`afhub.quotas`)
for decisions, and write the outcome; they never import JupyterHub or the services.
"""
