"""Prepared kernels for the dashboards: the pure parts (no kernel is started here).

A page view used to wait for a new kernel and for the imports of ipywidgets, plotly and
the dashboards' helpers (about 3 s together). The dashboards service therefore keeps a few
kernels started ahead in a *neutral* environment (no token, no viewer) and warmed by
importing what the dashboards import (:func:`warmup_code`). At a page view one of them is
taken (:meth:`KernelPool.take`), the viewer's identity and the request's variables are
handed into it (:func:`handover_code`) and it serves that one page view only; a new one is
started to take its place. :class:`afhub.web.dashboards.viewer.ViewerKernelManager` talks
to the kernels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from afhub.web.dashboards import DASHBOARDS

#: what every dashboard imports: the libraries, the shared helpers and each dashboard's
#: view module (``voila-apps/<name>_view.py``); none of them reads the environment when
#: imported (the token and the query string are read when a dashboard runs)
WARM_IMPORTS = (
    "ipywidgets",
    "plotly.graph_objects",
    "plotly.io",
    "requests",
    "dashboard_kit",
    *(f"{name}_view" for name in DASHBOARDS),
)


def warmup_code(modules: Iterable[str] = WARM_IMPORTS) -> str:
    """Code that imports ``modules`` in a kernel without leaving a name behind."""
    return "\n".join(f"__import__({module!r})" for module in modules)


def environment_change(
    current: Mapping[str, str], wanted: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """What turns the environment ``current`` into ``wanted``: the variables to set (new or
    changed) and the names to remove."""
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    removed = sorted(k for k in current if k not in wanted)
    return changed, removed


def handover_code(current: Mapping[str, str], wanted: Mapping[str, str]) -> str:
    """Code that makes a prepared kernel's ``os.environ`` (started as ``current``) equal to
    ``wanted``: the viewer's name and token, the request's variables. Values are written as
    Python literals (``repr`` of ``str``), so no value can become code; no name is left in
    the kernel's namespace."""
    changed, removed = environment_change(current, wanted)
    # plain ``str`` first: Voila's names are ``StrEnum`` members, whose repr is no literal
    literal = {str.__str__(k): str.__str__(v) for k, v in sorted(changed.items())}
    lines = [f"__import__('os').environ.update({literal!r})"]
    lines += [f"__import__('os').environ.pop({str.__str__(name)!r}, None)" for name in removed]
    return "\n".join(lines)


@dataclass
class KernelPool:
    """Which prepared kernels are ready (each with the environment it was started with)
    and how many are being prepared.

    Kernels are handed out oldest first and each at most once; ``size`` 0 keeps none.
    """

    size: int
    ready: dict[str, dict[str, str]] = field(default_factory=dict)
    preparing: int = 0
    closed: bool = False

    def shortfall(self) -> int:
        """How many kernels to start now so that ``size`` are ready or being prepared."""
        if self.closed:
            return 0
        return max(0, self.size - len(self.ready) - self.preparing)

    def add(self, kernel_id: str, env: Mapping[str, str]) -> bool:
        """A prepared kernel is ready; False (keep it out) when the pool is closed or full."""
        if self.closed or len(self.ready) >= self.size or kernel_id in self.ready:
            return False
        self.ready[kernel_id] = dict(env)
        return True

    def take(self) -> tuple[str, dict[str, str]] | None:
        """The oldest ready kernel and its environment, no longer in the pool; None when
        there is none."""
        if not self.ready:
            return None
        kernel_id = next(iter(self.ready))
        return kernel_id, self.ready.pop(kernel_id)

    def discard(self, kernel_id: str) -> None:
        """Forget ``kernel_id`` (it died or was shut down)."""
        self.ready.pop(kernel_id, None)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self.ready

    def __len__(self) -> int:
        return len(self.ready)

    def close(self) -> list[str]:
        """No more kernels in or out; the ready ones, to shut down."""
        self.closed = True
        left = list(self.ready)
        self.ready.clear()
        return left
