"""``python -m afhub.web.dashboards``: the dashboards service, as the hub starts it.

Jupyter Server with JupyterHub's single-user extension (hub OAuth, as
``jupyterhub-singleuser`` does for a hub-managed notebook service), Voila and
:mod:`afhub.web.dashboards.routes`, and no other extension (no JupyterLab, no terminals:
whatever other extensions are installed are not loaded)."""

from __future__ import annotations

import os
import sys

from jupyterhub.singleuser.extension import JupyterHubSingleUser

from afhub.web.dashboards import APPS

#: the only server extensions loaded besides JupyterHub's
EXTENSIONS = {"voila.server_extension": True, "afhub.web.dashboards.routes": True}
#: kernels idle this long are shut down (Voila also shuts a kernel down when its page
#: closes); checked every minute
KERNEL_IDLE_SECONDS = 1200
#: seconds without output before Voila sends a heartbeat to keep the page's request open
KEEP_ALIVE_SECONDS = 600


def arguments(apps: str) -> list[str]:
    """The server's command line: its folder, kernels and access rules, Voila's options."""
    viewer = "afhub.web.dashboards.viewer"
    return [
        f"--ServerApp.root_dir={apps}",
        f"--ServerApp.kernel_manager_class={viewer}.ViewerKernelManager",
        # kernel clients that do not hang on a missed ZeroMQ wake-up (page views that
        # never finished): afhub.web.dashboards.channels
        "--AsyncKernelManager.client_class=afhub.web.dashboards.channels.WakefulKernelClient",
        f"--ServerApp.authorizer_class={viewer}.ViewerAuthorizer",
        "--ServerApp.terminals_enabled=False",
        f"--MappingKernelManager.cull_idle_timeout={KERNEL_IDLE_SECONDS}",
        "--MappingKernelManager.cull_interval=60",
        "--MappingKernelManager.cull_connected=True",
        "--VoilaConfiguration.show_tracebacks=False",
        "--VoilaConfiguration.preheat_kernel=False",
        # Voila's keep-alive loop (asyncio.wait_for on a queue) can lose the page's last
        # part when a wait times out as it arrives (Python 3.11): a page whose cells ran
        # longer than the 10 s default then rendered forever. No heartbeat before 10 min.
        f"--VoilaConfiguration.http_keep_alive_timeout={KEEP_ALIVE_SECONDS}",
        "--KernelSpecManager.ensure_native_kernel=True",
        "--ServerApp.default_url=/voila/tree",
        # as the facility's own user, like the users' servers (afhub.spawners.local)
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]


def main() -> None:
    JupyterHubSingleUser.serverapp_config = {"jpserver_extensions": dict(EXTENSIONS)}
    JupyterHubSingleUser.launch_instance([*arguments(str(APPS)), *sys.argv[1:]])


if __name__ == "__main__":
    main()
