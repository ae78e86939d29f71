"""Fitting core: pyhf workspaces in, CLs out.

Pure core: nothing in this package imports JupyterHub, tornado or the facility database.
The fitting service (a later layer) wraps these engines.
"""
