"""connectors: private package registries for workloads that never hold their credentials."""

__version__ = "0.1.0"
