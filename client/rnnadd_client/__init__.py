"""Python client for the rnnadd service: `Client(url).predict(2, 3)["decimal"] == 5`."""

from rnnadd_client.client import DEFAULT_URL, TERMINAL, Client
from rnnadd_client.errors import (
    ClientError,
    JobTimeout,
    RequestError,
    ServerError,
    TransportError,
)

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_URL",
    "TERMINAL",
    "Client",
    "ClientError",
    "JobTimeout",
    "RequestError",
    "ServerError",
    "TransportError",
]
