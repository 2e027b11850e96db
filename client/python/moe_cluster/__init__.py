"""moe_cluster: call a moe-cluster router from Python.

    import moe_cluster
    with moe_cluster.Client("127.0.0.1:7100") as c:
        y = c.forward(0, x).output          # numpy in -> numpy out, torch in -> torch out

AsyncClient is the same for asyncio; moe_cluster.hf.offload(model, address) replaces the MoE
blocks of a transformers model with calls to the cluster. Errors are moe_cluster.Error and its
subclasses, one per server error code.

A cluster with mutual TLS (a `tls:` section in its YAML): Client.from_config("cluster.yaml"), or
Client(address, tls=moe_cluster.tls_context("cluster.yaml")).
"""

from ._client import (AsyncClient, Client, ForwardResult, Info, Routing, ShardStatus, Stats,
                      DEFAULT_TIMEOUT_S)
from ._config import router_address, tls_context
from .errors import (DeadlineExceeded, Error, FailedPrecondition, Internal, InvalidArgument,
                     ResourceExhausted, Unavailable)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "Client", "ForwardResult", "Info", "Routing", "ShardStatus", "Stats",
    "Error", "InvalidArgument", "FailedPrecondition", "Unavailable", "DeadlineExceeded",
    "ResourceExhausted", "Internal", "DEFAULT_TIMEOUT_S", "__version__", "tls_context",
    "router_address",
]
