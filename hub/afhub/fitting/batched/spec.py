"""Compile one HistFactory workspace spec (pyhf JSON) into flat arrays for the batched model.

The compiled form is a list of *cells*: one cell per (channel, sample, bin). Each cell carries
its nominal yield, the bin it adds to, and the modifiers acting on it, expressed as references
to parameters (vector parameters such as ``staterror`` are expanded into one scalar per bin):

- histosys: summed up/down deltas per (cell, parameter) (code4p is linear in the deltas);
- normsys: (cell, parameter, hi, lo) entries (code4 factors multiply);
- linear factors (normfactor, shapefactor, lumi, staterror, shapesys): (cell, parameter)
  entries, the cell's yield is multiplied by the parameter's value;
- constraints: Gaussian (parameter, auxdata, sigma) and Poisson (parameter, auxdata, tau).

Everything follows pyhf 0.7.6's definitions (``pyhf.modifiers``). Anything this compiler does
not support raises :class:`Unsupported` with a human-readable reason; the engine then leaves that
patch to the pyhf engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from afhub.fitting import jsonpatch

SUPPORTED_MODIFIERS = (
    "normfactor",
    "shapefactor",
    "lumi",
    "normsys",
    "histosys",
    "shapesys",
    "staterror",
)
#: modifier kinds with one parameter whatever the number of bins
_SCALAR_KINDS = ("normfactor", "lumi", "normsys", "histosys")
#: pyhf paramset categories: parameters of different categories cannot share a name
_CATEGORY = {
    "normfactor": "unconstrained",
    "shapefactor": "unconstrained",
    "lumi": "lumi",
    "normsys": "normal",
    "histosys": "normal",
    "staterror": "staterror",
    "shapesys": "poisson",
}
_USER_KEYS = {"name", "inits", "bounds", "fixed", "auxdata", "sigmas"}


class Unsupported(Exception):
    """The spec uses something the batched engine does not implement (or is invalid)."""


@dataclass
class CompiledModel:
    """Flat description of one model; every parameter index refers to ``par_names``."""

    par_names: list[str]
    poi_index: int
    init: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fixed: np.ndarray
    #: per cell: nominal yield and global bin index
    nominal: np.ndarray
    cell_bin: np.ndarray
    observed: np.ndarray
    #: histosys entries: cell, parameter, delta up (hi - nom), delta down (nom - lo)
    histo_cell: np.ndarray
    histo_par: np.ndarray
    histo_up: np.ndarray
    histo_dn: np.ndarray
    #: normsys entries (one per sample and modifier): parameter, hi, lo
    ns_par: np.ndarray
    ns_hi: np.ndarray
    ns_lo: np.ndarray
    #: which cells each normsys entry multiplies: pairs (cell, entry)
    ns_map_cell: np.ndarray
    ns_map_entry: np.ndarray
    #: linear factors: cell, parameter
    f_cell: np.ndarray
    f_par: np.ndarray
    #: Gaussian constraints: parameter, auxdata, sigma
    gauss_par: np.ndarray
    gauss_aux: np.ndarray
    gauss_sigma: np.ndarray
    #: Poisson constraints: parameter, auxdata, tau
    pois_par: np.ndarray
    pois_aux: np.ndarray
    pois_tau: np.ndarray
    #: parameter name -> slice into par_names (vector parameters span several entries)
    par_slices: dict[str, slice] = field(default_factory=dict)

    @property
    def n_pars(self) -> int:
        return len(self.par_names)

    @property
    def n_cells(self) -> int:
        return len(self.nominal)

    @property
    def n_bins(self) -> int:
        return len(self.observed)


@dataclass
class _Sample:
    """One sample of one channel, validated and turned into arrays (cacheable)."""

    nominal: np.ndarray
    #: (kind, name) of every modifier, in order
    mods: list[tuple[str, str]]
    histo_names: list[str]
    histo_up: np.ndarray  # [H, nbins]
    histo_dn: np.ndarray
    ns_names: list[str]
    ns_hi: np.ndarray  # [J]
    ns_lo: np.ndarray
    scalar_factors: list[str]  # normfactor, lumi
    vector_factors: list[str]  # shapefactor, staterror, shapesys
    #: staterror / shapesys uncertainties by name
    uncertainties: dict[str, np.ndarray]
    #: (name, category) of the one-parameter modifiers (normfactor, lumi, normsys, histosys)
    scalar_sets: frozenset[tuple[str, str]]
    #: the modifiers with a parameter per bin (shapefactor, staterror, shapesys), in order
    vector_mods: tuple[tuple[str, str], ...]


def _numbers(values: Any, n: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise Unsupported(f"{what}: not a list of numbers") from err
    if arr.shape != (n,):
        raise Unsupported(f"{what}: expected {n} numbers")
    if not np.isfinite(arr).all():
        raise Unsupported(f"{what}: non-finite numbers")
    return arr


def _histosys_data(
    names: list[str], data: list[dict[str, Any]], nbins: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``hi_data`` and ``lo_data`` of a sample's histosys modifiers, ``[H, nbins]`` each,
    read as one array (a sample carries dozens; one conversion instead of one per list)."""
    if not names:
        return np.zeros((0, nbins)), np.zeros((0, nbins))
    try:
        both = np.asarray(
            [d.get("hi_data") for d in data] + [d.get("lo_data") for d in data], dtype=float
        )
        ok = both.shape == (2 * len(names), nbins) and bool(np.isfinite(both).all())
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:  # say which modifier is wrong, as the one-by-one reading does
        for name, d in zip(names, data, strict=True):
            if not isinstance(d, dict):
                raise Unsupported(f"histosys {name!r}: data is not an object")
            _numbers(d.get("hi_data"), nbins, f"histosys {name!r}")
            _numbers(d.get("lo_data"), nbins, f"histosys {name!r}")
    return both[: len(names)], both[len(names) :]


def _compile_sample(sample: dict[str, Any], nbins: int) -> _Sample:
    sname = sample.get("name")
    nom = _numbers(sample.get("data"), nbins, f"sample {sname!r}")
    mods: list[tuple[str, str]] = []
    h_names: list[str] = []
    h_data: list[dict[str, Any]] = []
    ns_names: list[str] = []
    ns_hi: list[float] = []
    ns_lo: list[float] = []
    scalars: list[str] = []
    vectors: list[str] = []
    unc: dict[str, np.ndarray] = {}
    for mod in sample.get("modifiers", []):
        kind, name = mod.get("type"), mod.get("name")
        if kind not in SUPPORTED_MODIFIERS:
            raise Unsupported(f"modifier type {kind!r} ({name!r})")
        if (kind, name) in mods:
            raise Unsupported(f"modifier {kind}/{name} repeated on sample {sname!r}")
        mods.append((kind, name))
        data = mod.get("data")
        if kind in ("normfactor", "lumi"):
            scalars.append(name)
        elif kind == "shapefactor":
            vectors.append(name)
        elif kind == "normsys":
            hi, lo = float(data["hi"]), float(data["lo"])
            if not (hi > 0 and lo > 0 and math.isfinite(hi) and math.isfinite(lo)):
                raise Unsupported(f"normsys {name!r} with non-positive or non-finite hi/lo")
            ns_names.append(name)
            ns_hi.append(hi)
            ns_lo.append(lo)
        elif kind == "histosys":
            h_names.append(name)
            h_data.append(data)
        else:  # staterror, shapesys
            unc[name] = _numbers(data, nbins, f"{kind} {name!r}")
            vectors.append(name)
    h_hi, h_lo = _histosys_data(h_names, h_data, nbins)
    return _Sample(
        nominal=nom,
        mods=mods,
        histo_names=h_names,
        histo_up=h_hi - nom,
        histo_dn=nom - h_lo,
        ns_names=ns_names,
        ns_hi=np.array(ns_hi, dtype=float),
        ns_lo=np.array(ns_lo, dtype=float),
        scalar_factors=scalars,
        vector_factors=vectors,
        uncertainties=unc,
        scalar_sets=frozenset((n, _CATEGORY[k]) for k, n in mods if k in _SCALAR_KINDS),
        vector_mods=tuple((k, n) for k, n in mods if k not in _SCALAR_KINDS),
    )


class SampleCache:
    """Compiled samples keyed by object identity (patched specs share untouched samples).

    The cache keeps a reference to every sample it compiled so that identities stay unique.
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[dict[str, Any], int, _Sample]] = {}

    def get(self, sample: dict[str, Any], nbins: int) -> _Sample:
        hit = self._items.get(id(sample))
        if hit is not None and hit[0] is sample and hit[1] == nbins:
            return hit[2]
        compiled = _compile_sample(sample, nbins)
        self._items[id(sample)] = (sample, nbins, compiled)
        return compiled


def apply_patch(workspace: dict[str, Any], patch_ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a JSON Patch to a workspace spec; the input is left unchanged.

    :mod:`afhub.fitting.jsonpatch` (the one applier, copy-on-write): the result shares every
    untouched channel and sample with ``workspace`` (which lets :func:`compile_spec` reuse
    their compiled form), and the values the patch inserts or copies: treat all as
    read-only. No size caps: the service applies only patches its validation accepted.
    """
    if not patch_ops:
        return workspace
    try:
        return jsonpatch.apply_patch(workspace, patch_ops, jsonpatch.UNBOUNDED)
    except jsonpatch.PatchError as err:
        raise Unsupported(f"patch cannot be applied: {err}") from err


def _measurement(spec: dict[str, Any], name: str | None) -> dict[str, Any]:
    measurements = spec.get("measurements") or []
    if not measurements:
        raise Unsupported("workspace has no measurement")
    if name is None:
        return measurements[0]
    for m in measurements:
        if m.get("name") == name:
            return m
    raise Unsupported(f"measurement {name!r} not found")


class _Params:
    """Registry of parameter sets, in order of first use."""

    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}
        #: (name, category) of the one-parameter sets
        self.scalars: set[tuple[str, str]] = set()

    def add(self, name: str, category: str, n: int, **defaults: Any) -> dict[str, Any]:
        if name in self.sets:
            ps = self.sets[name]
            if ps["category"] != category:
                raise Unsupported(
                    f"parameter {name!r} is used by modifiers of different kinds "
                    f"({ps['category']}, {category})"
                )
            if ps["n"] != n:
                raise Unsupported(f"parameter {name!r} is used with {ps['n']} and {n} bins")
            return ps
        ps = {"category": category, "n": n, **defaults}
        self.sets[name] = ps
        if n == 1:
            self.scalars.add((name, category))
        return ps


def _check_config(meas: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The measurement's POI name and its parameter settings by name (validated keys)."""
    config = meas.get("config", {})
    poi_name = config.get("poi")
    if not poi_name:
        raise Unsupported("measurement defines no POI")
    user = {p["name"]: p for p in config.get("parameters", [])}
    for pname, pconf in user.items():
        extra = set(pconf) - _USER_KEYS
        if extra:
            raise Unsupported(f"parameter setting(s) {sorted(extra)} for {pname!r}")
    return poi_name, user


@dataclass
class _Placement:
    """Samples placed as cells, with the parameter sets their modifiers use."""

    params: _Params = field(default_factory=_Params)
    #: (first cell, nbins, compiled sample, channel name)
    placed: list[tuple[int, int, _Sample, str]] = field(default_factory=list)
    observed: list[np.ndarray] = field(default_factory=list)
    cell_bin: list[np.ndarray] = field(default_factory=list)
    staterr: dict[str, dict[str, Any]] = field(default_factory=dict)
    shapesys_seen: set[str] = field(default_factory=set)
    n_cells: int = 0
    n_bins: int = 0


def _register_modifiers(pl: _Placement, cs: _Sample, cname: str, nbins: int) -> None:
    """Add the parameter sets of one placed sample's modifiers to ``pl.params``."""
    params = pl.params
    # a sample whose one-parameter modifiers are all known (every sample of a patchset but
    # the new signal) registers only its per-bin ones: the same sets in the same order
    known = cs.scalar_sets <= params.scalars
    for kind, name in cs.vector_mods if known else cs.mods:
        if kind in _SCALAR_KINDS:
            params.add(name, _CATEGORY[kind], 1)
        elif kind == "shapefactor":
            ps = params.add(name, "unconstrained", nbins)
            if ps.setdefault("channel", cname) != cname:
                raise Unsupported(f"shapefactor {name!r} spans several channels")
        elif kind == "staterror":
            params.add(name, "staterror", nbins)
            st = pl.staterr.setdefault(name, {"channel": cname, "nom": [], "unc": []})
            if st["channel"] != cname:
                raise Unsupported(f"staterror {name!r} spans several channels")
            st["nom"].append(cs.nominal)
            st["unc"].append(cs.uncertainties[name])
        else:  # shapesys
            if name in pl.shapesys_seen:
                raise Unsupported(f"shapesys {name!r} used on more than one sample")
            pl.shapesys_seen.add(name)
            params.add(name, "poisson", nbins, nom=cs.nominal, unc=cs.uncertainties[name])


def _place_channels(spec: dict[str, Any], cache: SampleCache) -> _Placement:
    """Every channel's samples as consecutive cells, in the spec's order."""
    observations = {o["name"]: o["data"] for o in spec.get("observations", [])}
    pl = _Placement()
    channel_names: set[str] = set()
    for channel in spec.get("channels", []):
        cname = channel["name"]
        if cname in channel_names:
            raise Unsupported(f"channel {cname!r} defined twice")
        channel_names.add(cname)
        if cname not in observations:
            raise Unsupported(f"no observations for channel {cname!r}")
        samples = channel.get("samples", [])
        if not samples:
            raise Unsupported(f"channel {cname!r} has no samples")
        nbins = len(samples[0].get("data") or [])
        if nbins == 0:
            raise Unsupported(f"channel {cname!r} has no bins")
        pl.observed.append(_numbers(observations[cname], nbins, f"observations of {cname!r}"))
        for sample in samples:
            cs = cache.get(sample, nbins)
            pl.placed.append((pl.n_cells, nbins, cs, cname))
            pl.cell_bin.append(np.arange(pl.n_bins, pl.n_bins + nbins))
            pl.n_cells += nbins
            _register_modifiers(pl, cs, cname, nbins)
        pl.n_bins += nbins
    if not pl.placed:
        raise Unsupported("workspace has no channels")
    return pl


def _cat(parts: list[np.ndarray], dtype: Any = float) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _modifier_entries(
    placed: list[tuple[int, int, _Sample, str]], start: dict[str, int]
) -> dict[str, Any]:
    """Histosys, normsys and linear-factor entries, one array per sample, concatenated."""
    hc, hp, hu, hd = [], [], [], []
    mc, me, npar, nhi, nlo = [], [], [], [], []
    n_entries = 0
    fc, fp = [], []
    for c0, nb, cs, _ in placed:
        cells = np.arange(c0, c0 + nb)
        if cs.histo_names:
            pars = np.array([start[n] for n in cs.histo_names])
            hc.append(np.broadcast_to(cells, cs.histo_up.shape).ravel())
            hp.append(np.repeat(pars, nb))
            hu.append(cs.histo_up.ravel())
            hd.append(cs.histo_dn.ravel())
        if cs.ns_names:
            npar.append(np.array([start[n] for n in cs.ns_names]))
            nhi.append(cs.ns_hi)
            nlo.append(cs.ns_lo)
            entries = n_entries + np.arange(len(cs.ns_names))
            mc.append(np.tile(cells, len(entries)))
            me.append(np.repeat(entries, nb))
            n_entries += len(entries)
        for n in cs.scalar_factors:
            fc.append(cells)
            fp.append(np.full(nb, start[n]))
        for n in cs.vector_factors:
            fc.append(cells)
            fp.append(start[n] + np.arange(nb))
    return {
        "histo_cell": _cat(hc, np.int64),
        "histo_par": _cat(hp, np.int64),
        "histo_up": _cat(hu),
        "histo_dn": _cat(hd),
        "ns_par": _cat(npar, np.int64),
        "ns_hi": _cat(nhi),
        "ns_lo": _cat(nlo),
        "ns_map_cell": _cat(mc, np.int64),
        "ns_map_entry": _cat(me, np.int64),
        "f_cell": _cat(fc, np.int64),
        "f_par": _cat(fp, np.int64),
    }


def compile_spec(
    spec: dict[str, Any],
    measurement: str | None = None,
    normsys_interpcode: str = "code4",
    histosys_interpcode: str = "code4p",
    cache: SampleCache | None = None,
) -> CompiledModel:
    """Compile a (patched) workspace spec; raise :class:`Unsupported` if it cannot be batched."""
    if normsys_interpcode != "code4":
        raise Unsupported(f"normsys interpolation {normsys_interpcode!r} (only code4)")
    if histosys_interpcode != "code4p":
        raise Unsupported(f"histosys interpolation {histosys_interpcode!r} (only code4p)")
    poi_name, user = _check_config(_measurement(spec, measurement))
    pl = _place_channels(spec, cache or SampleCache())
    if poi_name not in pl.params.sets:
        raise Unsupported(f"POI {poi_name!r} is not a parameter of the model")
    if pl.params.sets[poi_name]["n"] != 1:
        raise Unsupported(f"POI {poi_name!r} is not a scalar")
    layout = _layout_parameters(pl.params, user, pl.staterr)
    slices = layout["par_slices"]
    start = {name: sl.start for name, sl in slices.items()}
    compiled = CompiledModel(
        nominal=np.concatenate([cs.nominal for _, _, cs, _ in pl.placed]),
        cell_bin=np.concatenate(pl.cell_bin),
        observed=np.concatenate(pl.observed),
        poi_index=slices[poi_name].start,
        **_modifier_entries(pl.placed, start),
        **layout,
    )
    if compiled.fixed[compiled.poi_index]:
        raise Unsupported("the POI is fixed")
    return compiled


@dataclass
class _SetTerms:
    """One parameter set's defaults before the user's settings: inits, bounds, fixed flags
    and constraint terms (``None`` where the set's kind has none)."""

    init: list[float]
    bounds: list[tuple[float, float]]
    fixed: list[bool]
    aux: list[float] | None = None
    sig: list[float] | None = None
    tau: list[float] | None = None


def _staterror_terms(st: dict[str, Any], n: int) -> _SetTerms:
    noms = np.asarray(st["nom"], dtype=float)
    uncs = np.asarray(st["unc"], dtype=float)
    nomsall = noms.sum(axis=0)
    safe = np.where(nomsall > 0, nomsall, 1.0)
    rel = np.where(nomsall > 0, (uncs / safe) ** 2, 0.0)
    relerr = np.sqrt(rel.sum(axis=0))
    fix = [bool(v == 0) for v in relerr]
    sig = [1.0 if f else float(v) for f, v in zip(fix, relerr, strict=True)]
    return _SetTerms([1.0] * n, [(1e-10, 10.0)] * n, fix, aux=[1.0] * n, sig=sig)


def _shapesys_terms(ps: dict[str, Any], n: int) -> _SetTerms:
    valid = [u > 0 and v > 0 for v, u in zip(ps["nom"], ps["unc"], strict=True)]
    tau = [
        float(v * v / (u * u)) if ok else 1.0
        for ok, v, u in zip(valid, ps["nom"], ps["unc"], strict=True)
    ]
    fix = [not ok for ok in valid]
    return _SetTerms([1.0] * n, [(1e-10, 10.0)] * n, fix, aux=list(tau), tau=tau)


def _default_terms(
    name: str, ps: dict[str, Any], conf: dict[str, Any], staterr: dict[str, dict[str, Any]]
) -> _SetTerms:
    """pyhf's defaults for one parameter set of its category."""
    n, cat = ps["n"], ps["category"]
    if cat == "unconstrained":
        return _SetTerms([1.0] * n, [(0.0, 10.0)] * n, [False] * n)
    if cat == "normal":
        return _SetTerms([0.0] * n, [(-5.0, 5.0)] * n, [False] * n, aux=[0.0] * n, sig=[1.0] * n)
    if cat == "lumi":
        if not all(k in conf for k in ("inits", "bounds", "auxdata", "sigmas")):
            raise Unsupported("lumi needs inits, bounds, auxdata and sigmas in the config")
        return _SetTerms([1.0], [(0.0, 10.0)], [False] * n, aux=[1.0], sig=[1.0])
    if cat == "staterror":
        return _staterror_terms(staterr[name], n)
    return _shapesys_terms(ps, n)  # poisson (shapesys)


def _user_terms(name: str, n: int, conf: dict[str, Any], terms: _SetTerms) -> _SetTerms:
    """``terms`` with the measurement's settings for parameter set ``name`` applied."""
    p_init = conf.get("inits", terms.init)
    p_bounds = conf.get("bounds", terms.bounds)
    fix = [bool(conf["fixed"])] * n if "fixed" in conf else terms.fixed
    aux, sig = terms.aux, terms.sig
    if "auxdata" in conf:
        if aux is None:
            raise Unsupported(f"{name!r} does not use auxdata")
        aux = [float(v) for v in conf["auxdata"]]
    if "sigmas" in conf:
        if sig is None:
            raise Unsupported(f"{name!r} does not use sigmas")
        sig = [float(v) for v in conf["sigmas"]]
    for what, vals in (("inits", p_init), ("bounds", p_bounds), ("auxdata", aux)):
        if vals is not None and len(vals) != n:
            raise Unsupported(f"{what} of {name!r} must have {n} entries")
    if sig is not None and len(sig) != n:
        raise Unsupported(f"sigmas of {name!r} must have {n} entries")
    return _SetTerms(p_init, p_bounds, fix, aux=aux, sig=sig, tau=terms.tau)


def _layout_parameters(
    params: _Params, user: dict[str, dict[str, Any]], staterr: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Parameter vector: names, inits, bounds, fixed flags and constraint terms (pyhf's)."""
    par_names: list[str] = []
    init: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    fixed: list[bool] = []
    par_slices: dict[str, slice] = {}
    gauss: list[tuple[int, float, float]] = []
    poisson: list[tuple[int, float, float]] = []
    for name, ps in params.sets.items():
        n, cat = ps["n"], ps["category"]
        conf = user.get(name, {})
        start = len(par_names)
        par_slices[name] = slice(start, start + n)
        par_names.extend([name] if n == 1 else [f"{name}[{i}]" for i in range(n)])
        terms = _user_terms(name, n, conf, _default_terms(name, ps, conf, staterr))
        for i in range(n):
            lo_b, hi_b = (float(v) for v in terms.bounds[i])
            value = float(terms.init[i])
            if not lo_b <= value <= hi_b:
                raise Unsupported(f"initial value of {par_names[start + i]!r} outside bounds")
            init.append(value)
            lower.append(lo_b)
            upper.append(hi_b)
            fixed.append(terms.fixed[i])
            if cat in ("normal", "lumi", "staterror"):
                assert terms.sig is not None  # for mypy: every Gaussian set has sigmas
                assert terms.aux is not None
                if not terms.sig[i] > 0:
                    raise Unsupported(f"non-positive sigma for {par_names[start + i]!r}")
                gauss.append((start + i, terms.aux[i], terms.sig[i]))
            elif cat == "poisson":
                assert terms.tau is not None  # for mypy: every Poisson set has tau
                assert terms.aux is not None
                poisson.append((start + i, terms.aux[i], terms.tau[i]))
    g = np.asarray(gauss, dtype=float).reshape(-1, 3)
    q = np.asarray(poisson, dtype=float).reshape(-1, 3)
    return {
        "par_names": par_names,
        "par_slices": par_slices,
        "init": np.asarray(init, dtype=float),
        "lower": np.asarray(lower, dtype=float),
        "upper": np.asarray(upper, dtype=float),
        "fixed": np.asarray(fixed, dtype=bool),
        "gauss_par": g[:, 0].astype(np.int64),
        "gauss_aux": g[:, 1],
        "gauss_sigma": g[:, 2],
        "pois_par": q[:, 0].astype(np.int64),
        "pois_aux": q[:, 1],
        "pois_tau": q[:, 2],
    }
