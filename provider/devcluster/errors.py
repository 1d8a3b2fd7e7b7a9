"""The dev cluster's one error type."""

from provider.errors import ProviderError


class DevClusterError(ProviderError):
    """Something the operator of the dev cluster must fix; the message says what."""
