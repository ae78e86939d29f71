"""The resource registry: providers, node pools (CPU, GPU, FPGA) and who may use them."""

from afhub.registry.model import (
    Provider,
    Registry,
    RegistryError,
    Resource,
    check_update,
    parse_registry,
)

__all__ = ["Provider", "Registry", "RegistryError", "Resource", "check_update", "parse_registry"]
