"""JupyterHub configuration file of afhub (``jupyterhub -f`` points here).

All values come from :mod:`afhub.settings`; see :func:`afhub.hubconfig.configure`.
"""

from afhub.hubconfig import configure

configure(get_config())  # noqa: F821 - get_config is provided by the config loader
