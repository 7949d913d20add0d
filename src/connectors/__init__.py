"""connectors: private package registries for workloads that never hold their credentials."""
