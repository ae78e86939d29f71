"""The service kit: what every hub-managed afhub service shares, and nothing of any one service.

- :mod:`.errors`: :class:`~.errors.ApiError` and the mapping of known errors (stores, group
  tree, quotas) to a 4xx status with a message;
- :mod:`.bodies`: the JSON body parser with its limits, and credentials kept out of URLs and
  logs;
- :mod:`.handlers`: the JSON handler on JupyterHub's ``HubOAuth`` (identity from the hub,
  JSON in and out, errors as ``{"error": ..., "status": 4xx}``, never a stack trace), the 404
  handler and the OpenAPI document handler;
- :mod:`.app`: the service's application: its routes under its prefix between the OpenAPI
  document and the 404;
- :mod:`.lifecycle`: the watch on the parent process (a service never outlives the hub that
  started it) and the stop signals.

The facility API, the fitting service, the gateway glue, the accountant and the culler build
on the kit and never on each other (``tests/test_layers.py``).
"""
