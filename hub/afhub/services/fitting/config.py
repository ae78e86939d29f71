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

from traitlets import Enum, Float, Integer, TraitError, Unicode
from traitlets.config import Configurable

from afhub.fitting.validation import Limits
from afhub.settings import from_env, integer, number

#: the validation caps (:class:`~afhub.fitting.validation.Limits`) an operator sets here,
#: under the same names
LIMIT_SETTINGS = (
    "max_body_bytes",
    "max_bins",
    "max_parameters",
    "max_patches",
    "max_patch_operations",
    "max_operations",
    "max_document_nodes",
    "max_copied_nodes",
    "max_work_nodes",
    "max_model_size",
)


class FittingService(Configurable):
    """How the fitting service runs fits and what it accepts."""

    workers = Integer(
        help="""Worker processes of the local pool (each runs one fit at a time). Default:
        the machine's cores. Env: ``AFHUB_FIT_WORKERS``.""",
    ).tag(config=True)

    _default_workers = from_env(
        "workers", "AFHUB_FIT_WORKERS", lambda _settings: os.cpu_count() or 1, integer
    )

    executor = Enum(
        ["local", "dask"],
        help="""Where fits run. ``local``: a pool of ``workers`` killable processes on this
        node. ``dask``: one Dask task per patch (per chunk of patches for the batched
        engine) on a Dask cluster: the one at ``dask_address`` or of ``dask_gateway_cluster``
        when set, else a ``distributed.LocalCluster`` the service starts and owns
        (``dask_workers`` processes, one thread each). Env: ``AFHUB_FIT_EXECUTOR``.""",
    ).tag(config=True)

    _default_executor = from_env("executor", "AFHUB_FIT_EXECUTOR", "local")

    dask_workers = Integer(
        help="""Worker processes (one thread each) of the Dask cluster the service owns
        (``executor: dask`` without ``dask_address``). Default: ``workers``. Env:
        ``AFHUB_FIT_DASK_WORKERS``.""",
    ).tag(config=True)

    _default_dask_workers = from_env(
        "dask_workers", "AFHUB_FIT_DASK_WORKERS", lambda settings: settings.workers, integer
    )

    dask_address = Unicode(
        help="""Scheduler address of an existing Dask cluster to run fits on
        (``executor: dask``), e.g. ``tcp://10.0.0.5:8786``: anything
        ``distributed.Client`` accepts. Its workers need afhub installed; the cluster's
        worker threads are what a fit job is charged for. Empty: the service starts its own
        cluster. Env: ``AFHUB_FIT_DASK_ADDRESS``.""",
    ).tag(config=True)

    _default_dask_address = from_env("dask_address", "AFHUB_FIT_DASK_ADDRESS", "")

    dask_gateway_cluster = Unicode(
        help="""Name of a running Dask Gateway cluster to run fits on (``executor: dask``),
        reached through the gateway at ``dask_gateway_url`` with the service's JupyterHub
        token; takes precedence over ``dask_address``. Env:
        ``AFHUB_FIT_DASK_GATEWAY_CLUSTER``.""",
    ).tag(config=True)

    _default_dask_gateway_cluster = from_env(
        "dask_gateway_cluster", "AFHUB_FIT_DASK_GATEWAY_CLUSTER", ""
    )

    dask_gateway_url = Unicode(
        help="""URL of the Dask Gateway API for ``dask_gateway_cluster`` (e.g.
        ``http://127.0.0.1:8000/services/dask-gateway``); empty: dask-gateway's own
        configuration (``DASK_GATEWAY__ADDRESS``). Env: ``AFHUB_FIT_DASK_GATEWAY_URL``.""",
    ).tag(config=True)

    _default_dask_gateway_url = from_env("dask_gateway_url", "AFHUB_FIT_DASK_GATEWAY_URL", "")

    wall_seconds = Float(
        help="""Wall-clock limit of one fit (one patch), in seconds; a fit still running
        then is killed and reported ``failed``. A request may ask for less with the query
        parameter ``wall_seconds``, never for more. Env: ``AFHUB_FIT_WALL_SECONDS``.""",
    ).tag(config=True)

    _default_wall_seconds = from_env("wall_seconds", "AFHUB_FIT_WALL_SECONDS", 3600, number)

    max_jobs_per_user = Integer(
        help="""Queued plus running jobs one user may have; more are refused with 429.
        Env: ``AFHUB_FIT_MAX_JOBS_PER_USER``.""",
    ).tag(config=True)

    _default_max_jobs_per_user = from_env(
        "max_jobs_per_user", "AFHUB_FIT_MAX_JOBS_PER_USER", 10, integer
    )

    max_jobs_per_group = Integer(
        help="""Queued plus running jobs charged to one group; more are refused with 429.
        Env: ``AFHUB_FIT_MAX_JOBS_PER_GROUP``.""",
    ).tag(config=True)

    _default_max_jobs_per_group = from_env(
        "max_jobs_per_group", "AFHUB_FIT_MAX_JOBS_PER_GROUP", 50, integer
    )

    max_running_jobs = Integer(
        help="""Jobs the scheduler runs at the same time (their patches share the worker
        pool; the rest wait in the queue). Env: ``AFHUB_FIT_MAX_RUNNING_JOBS``.""",
    ).tag(config=True)

    _default_max_running_jobs = from_env(
        "max_running_jobs", "AFHUB_FIT_MAX_RUNNING_JOBS", 4, integer
    )

    max_validations = Integer(
        help="""Submissions validated at the same time (validation of a large patchset takes
        seconds); submissions beyond ``4 *`` this many waiting are refused with 429.
        Env: ``AFHUB_FIT_MAX_VALIDATIONS``.""",
    ).tag(config=True)

    _default_max_validations = from_env("max_validations", "AFHUB_FIT_MAX_VALIDATIONS", 2, integer)

    max_body_bytes = Integer(
        help="""Largest request body, in bytes (413 beyond). Env:
        ``AFHUB_FIT_MAX_BODY_BYTES``.""",
    ).tag(config=True)

    _default_max_body_bytes = from_env(
        "max_body_bytes", "AFHUB_FIT_MAX_BODY_BYTES", 64 * 1024 * 1024, integer
    )

    cache_scope = Enum(
        ["all", "group", "user"],
        help="""Whose stored results may serve an identical request (same workspace, patch,
        operation, measurement and settings) without computing it again: ``all`` (anyone's),
        ``group`` (jobs charged to the same group) or ``user`` (the user's own). A result
        served from another user's job is reported as this job's own (``cached: false``, this
        job's timing); what remains visible is only that the job finished faster than a fit
        takes. ``user`` removes that too, at the cost of computing every user's fits. Env:
        ``AFHUB_FIT_CACHE_SCOPE``.""",
    ).tag(config=True)

    _default_cache_scope = from_env("cache_scope", "AFHUB_FIT_CACHE_SCOPE", "all")

    batched_device = Enum(
        ["cpu", "cuda"],
        help="""Where the batched engine runs: ``cpu``, or ``cuda`` on workers with a GPU (a
        job that uses it is then charged one GPU while it runs; results name the device,
        e.g. ``cuda:0``, in their provenance). With ``cuda`` the service checks at start
        that its workers see a CUDA device and refuses to start otherwise. Env:
        ``AFHUB_FIT_BATCHED_DEVICE``.""",
    ).tag(config=True)

    _default_batched_device = from_env("batched_device", "AFHUB_FIT_BATCHED_DEVICE", "cpu")

    gpu_resource = Unicode(
        help="""The registry resource the service's GPU is (``batched_device: cuda``), e.g.
        a GPU opened to one group only. Set, a job runs on the GPU only when the group it is
        charged to may pay for that resource (the group it is open to or one below it):
        a job of another group asking for ``engine: batched`` fails with a message naming
        the groups that may pay, one with ``engine: auto`` runs with pyhf on the CPU
        workers. Empty (the default): the GPU is the service's own, open to every group
        (each job is still charged one GPU against its group's quota). Env:
        ``AFHUB_FIT_GPU_RESOURCE``.""",
    ).tag(config=True)

    _default_gpu_resource = from_env("gpu_resource", "AFHUB_FIT_GPU_RESOURCE", "")

    max_bins = Integer(
        help="Most bins a workspace may have. Env: ``AFHUB_FIT_MAX_BINS``.",
    ).tag(config=True)

    _default_max_bins = from_env("max_bins", "AFHUB_FIT_MAX_BINS", Limits.max_bins, integer)

    max_parameters = Integer(
        help="Most parameters a model may have. Env: ``AFHUB_FIT_MAX_PARAMETERS``.",
    ).tag(config=True)

    _default_max_parameters = from_env(
        "max_parameters", "AFHUB_FIT_MAX_PARAMETERS", Limits.max_parameters, integer
    )

    max_patches = Integer(
        help="Most patches one request may carry. Env: ``AFHUB_FIT_MAX_PATCHES``.",
    ).tag(config=True)

    _default_max_patches = from_env(
        "max_patches", "AFHUB_FIT_MAX_PATCHES", Limits.max_patches, integer
    )

    max_patch_operations = Integer(
        help="""JSON Patch operations in one patch (413 beyond).
        Env: ``AFHUB_FIT_MAX_PATCH_OPERATIONS``.""",
    ).tag(config=True)

    _default_max_patch_operations = from_env(
        "max_patch_operations",
        "AFHUB_FIT_MAX_PATCH_OPERATIONS",
        Limits.max_patch_operations,
        integer,
    )

    max_operations = Integer(
        help="""JSON Patch operations in all patches of one request (413
        beyond). Env: ``AFHUB_FIT_MAX_OPERATIONS``.""",
    ).tag(config=True)

    _default_max_operations = from_env(
        "max_operations", "AFHUB_FIT_MAX_OPERATIONS", Limits.max_operations, integer
    )

    max_document_nodes = Integer(
        help="""JSON values (objects, arrays, strings, numbers, ...) a patched workspace may
        hold, counted as each patch operation is applied (413 at the operation that crosses
        it). Env: ``AFHUB_FIT_MAX_DOCUMENT_NODES``.""",
    ).tag(config=True)

    _default_max_document_nodes = from_env(
        "max_document_nodes", "AFHUB_FIT_MAX_DOCUMENT_NODES", Limits.max_document_nodes, integer
    )

    max_copied_nodes = Integer(
        help="""JSON values the ``copy`` operations of one patch may add (the only operation that
        builds more than the request carries; 413 at the operation that crosses it).
        Env: ``AFHUB_FIT_MAX_COPIED_NODES``.""",
    ).tag(config=True)

    _default_max_copied_nodes = from_env(
        "max_copied_nodes", "AFHUB_FIT_MAX_COPIED_NODES", Limits.max_copied_nodes, integer
    )

    max_work_nodes = Integer(
        help="""Work per request: the JSON values of all its patched workspaces together (about
        patches times workspace size; validation and each fit read each patched workspace
        whole; 413 beyond, checked before any patch is applied).
        Env: ``AFHUB_FIT_MAX_WORK_NODES``.""",
    ).tag(config=True)

    _default_max_work_nodes = from_env(
        "max_work_nodes", "AFHUB_FIT_MAX_WORK_NODES", Limits.max_work_nodes, integer
    )

    max_model_size = Integer(
        help="""Modifiers x samples x bins of a model (pyhf builds arrays of that size for
        every fit; 413 beyond). Env: ``AFHUB_FIT_MAX_MODEL_SIZE``.""",
    ).tag(config=True)

    _default_max_model_size = from_env(
        "max_model_size", "AFHUB_FIT_MAX_MODEL_SIZE", Limits.max_model_size, integer
    )

    def limits(self) -> Limits:
        """The validation caps for these settings."""
        return Limits(**{name: getattr(self, name) for name in LIMIT_SETTINGS})

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
