"""Our error tree. Adapters translate library exceptions into it (``raise KubeError(...) from e``)."""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every error the daemon reports; the message says what went wrong and what to do."""


class ConfigError(ProviderError):
    """A setting is missing or invalid."""


class KubeError(ProviderError):
    """The Kubernetes API refused or failed a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
