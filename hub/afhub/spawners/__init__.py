"""Spawners of afhub: a local spawner (laptops, workstations, CI) and, later, a KubeSpawner."""
