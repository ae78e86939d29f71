"""Spawners of afhub: a local spawner (laptops, workstations, CI) and a KubeSpawner.

* :mod:`~afhub.spawners.facility`: :class:`FacilitySpawner`, the base both build on
  (stores, charging, the charge option, the order of admission at start);
* :mod:`~afhub.spawners.profiles`: profiles from the registry, resolved server side;
* :mod:`~afhub.spawners.devices`: exclusive accelerator slots claimed after admission;
* :mod:`~afhub.spawners.local`, :mod:`~afhub.spawners.kube`: the two spawners.
"""
