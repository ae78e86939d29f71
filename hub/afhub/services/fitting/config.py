"""Settings of the fitting service.

Values come, in increasing priority, from the defaults below, from ``AFHUB_FIT_*``
environment variables, and from the ``FittingService`` section of the afhub YAML config
file (``$AFHUB_CONFIG``, default ``$AFHUB_HOME/afhub.yaml``)::

    FittingService:
      workers: 8
      wall_seconds: 1800
      max_jobs_per_user: 5
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Enum, Float, Integer, TraitError, default
from traitlets.config import Configurable

from afhub.fitting.validation import Limits


def _env(name: str, fallback: Any) -> Any:
    value = os.environ.get(name)
    return fallback if value in (None, "") else value


class FittingService(Configurable):
    """How the fitting service runs fits and what it accepts."""

    workers = Integer(
        help="""Worker processes of the local pool (each runs one fit at a time). Default:
        the machine's cores. Env: ``AFHUB_FIT_WORKERS``.""",
    ).tag(config=True)

    @default("workers")
    def _default_workers(self) -> int:
        return int(_env("AFHUB_FIT_WORKERS", os.cpu_count() or 1))

    wall_seconds = Float(
        help="""Wall-clock limit of one fit (one patch), in seconds; a fit still running
        then is killed and reported ``failed``. A request may ask for less with the query
        parameter ``wall_seconds``, never for more. Env: ``AFHUB_FIT_WALL_SECONDS``.""",
    ).tag(config=True)

    @default("wall_seconds")
    def _default_wall_seconds(self) -> float:
        return float(_env("AFHUB_FIT_WALL_SECONDS", 3600))

    max_jobs_per_user = Integer(
        help="""Queued plus running jobs one user may have; more are refused with 429.
        Env: ``AFHUB_FIT_MAX_JOBS_PER_USER``.""",
    ).tag(config=True)

    @default("max_jobs_per_user")
    def _default_max_jobs_per_user(self) -> int:
        return int(_env("AFHUB_FIT_MAX_JOBS_PER_USER", 10))

    max_jobs_per_group = Integer(
        help="""Queued plus running jobs charged to one group; more are refused with 429.
        Env: ``AFHUB_FIT_MAX_JOBS_PER_GROUP``.""",
    ).tag(config=True)

    @default("max_jobs_per_group")
    def _default_max_jobs_per_group(self) -> int:
        return int(_env("AFHUB_FIT_MAX_JOBS_PER_GROUP", 50))

    max_running_jobs = Integer(
        help="""Jobs the scheduler runs at the same time (their patches share the worker
        pool; the rest wait in the queue). Env: ``AFHUB_FIT_MAX_RUNNING_JOBS``.""",
    ).tag(config=True)

    @default("max_running_jobs")
    def _default_max_running_jobs(self) -> int:
        return int(_env("AFHUB_FIT_MAX_RUNNING_JOBS", 4))

    max_validations = Integer(
        help="""Submissions validated at the same time (validation of a large patchset takes
        seconds); submissions beyond ``4 *`` this many waiting are refused with 429.
        Env: ``AFHUB_FIT_MAX_VALIDATIONS``.""",
    ).tag(config=True)

    @default("max_validations")
    def _default_max_validations(self) -> int:
        return int(_env("AFHUB_FIT_MAX_VALIDATIONS", 2))

    max_body_bytes = Integer(
        help="""Largest request body, in bytes (413 beyond). Env:
        ``AFHUB_FIT_MAX_BODY_BYTES``.""",
    ).tag(config=True)

    @default("max_body_bytes")
    def _default_max_body_bytes(self) -> int:
        return int(_env("AFHUB_FIT_MAX_BODY_BYTES", 64 * 1024 * 1024))

    batched_device = Enum(
        ["cpu", "cuda"],
        help="""Where the batched engine runs: ``cpu``, or ``cuda`` on a node with a GPU (the
        job is then charged one GPU while it runs). Env: ``AFHUB_FIT_BATCHED_DEVICE``.""",
    ).tag(config=True)

    @default("batched_device")
    def _default_batched_device(self) -> str:
        return _env("AFHUB_FIT_BATCHED_DEVICE", "cpu")

    max_bins = Integer(
        help="Most bins a workspace may have. Env: ``AFHUB_FIT_MAX_BINS``.",
    ).tag(config=True)

    @default("max_bins")
    def _default_max_bins(self) -> int:
        return int(_env("AFHUB_FIT_MAX_BINS", Limits.max_bins))

    max_parameters = Integer(
        help="Most parameters a model may have. Env: ``AFHUB_FIT_MAX_PARAMETERS``.",
    ).tag(config=True)

    @default("max_parameters")
    def _default_max_parameters(self) -> int:
        return int(_env("AFHUB_FIT_MAX_PARAMETERS", Limits.max_parameters))

    max_patches = Integer(
        help="Most patches one request may carry. Env: ``AFHUB_FIT_MAX_PATCHES``.",
    ).tag(config=True)

    @default("max_patches")
    def _default_max_patches(self) -> int:
        return int(_env("AFHUB_FIT_MAX_PATCHES", Limits.max_patches))

    def limits(self) -> Limits:
        """The validation caps for these settings."""
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_bins=self.max_bins,
            max_parameters=self.max_parameters,
            max_patches=self.max_patches,
        )

    def check(self) -> FittingService:
        """Evaluate every setting now; raise ValueError naming a bad one."""
        try:
            for name in self.trait_names(config=True):
                value = getattr(self, name)
                if isinstance(value, int | float) and value <= 0:
                    raise ValueError(f"FittingService.{name} must be positive (got {value})")
        except TraitError as exc:
            raise ValueError(str(exc)) from None
        return self


def load_fitting_settings() -> FittingService:
    """The service's settings from the environment and the afhub YAML config file."""
    from afhub.settings import load_config_file

    return FittingService(config=load_config_file()).check()
