"""tls=: the client reaches a router through TLS. First through a TLS-terminating proxy on
loopback (a TLS endpoint in front of a plaintext router); the client verifies the proxy's
certificate against the given context. Then a cluster with mutual TLS of its own (config `tls:`,
certificates from scripts/make-tls-certs.sh): Client.from_config / tls_context read its YAML, and
a client without them is refused."""

import asyncio
import shutil
import ssl
import subprocess
import threading

import os

import numpy as np
import pytest

import moe_cluster
from conftest import ROOT, TINY, cluster, write_config


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture()
def tls_proxy(tiny_cluster, certificate):
    """A TLS listener on 127.0.0.1 that forwards every connection to the router; its address."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    host, port = tiny_cluster.rsplit(":", 1)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        router_reader, router_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_reader, router_writer), pipe(router_reader, client_writer))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        box["address"] = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        box["server"] = server
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(10)
    yield box["address"]

    async def shutdown():
        box["server"].close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_tls_with_a_trusted_certificate(tls_proxy, certificate):
    context = ssl.create_default_context(cafile=str(certificate[0]))
    x = np.ones((2, TINY["hidden"]), np.float32)
    with moe_cluster.Client(tls_proxy, tls=context) as c:
        assert c.info().family == "mixtral"
        assert c.forward(0, x).output.shape == x.shape

    async def main():
        async with moe_cluster.AsyncClient(tls_proxy, tls=context) as a:
            return await asyncio.gather(*(a.forward(1, x) for _ in range(4)))

    assert all(r.output.shape == x.shape for r in asyncio.run(main()))


def test_tls_refuses_an_untrusted_certificate(tls_proxy):
    with pytest.raises(moe_cluster.Unavailable, match="certificate verify failed"):
        moe_cluster.Client(tls_proxy, tls=True, timeout_s=5)  # system CAs: not ours


def test_tls_argument_is_checked():
    with pytest.raises(moe_cluster.InvalidArgument, match="tls"):
        moe_cluster.Client("127.0.0.1:1", tls="yes")


# -- a cluster with mutual TLS (config `tls:`) ------------------------------------------------

@pytest.fixture(scope="module")
def tls_cluster(work, tiny_model, tmp_path_factory):
    """The tiny model with `tls:` (relative paths, as the YAML resolves them); (address, YAML)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make the cluster's certificates)")
    d = tmp_path_factory.mktemp("mtls")
    subprocess.run([os.path.join(ROOT, "scripts", "make-tls-certs.sh"), str(d / "certs")],
                   check=True, capture_output=True)
    tls = {"ca": str(d / "certs" / "ca.pem"), "cert": "certs/cluster.pem",
           "key": "certs/cluster.key"}
    with cluster(str(d), tiny_model, extra={"tls": tls}) as address:
        [yaml_path] = [str(p) for p in d.glob("cluster-*.yaml")]
        yield address, yaml_path


def test_cluster_tls_from_config(tls_cluster):
    address, yaml_path = tls_cluster
    x = np.ones((2, TINY["hidden"]), np.float32)
    with moe_cluster.Client.from_config(yaml_path) as c:
        assert c.address == address
        assert c.info().ready
        assert c.forward(0, x).output.shape == x.shape

    async def main():
        tls = moe_cluster.tls_context(yaml_path)
        async with moe_cluster.AsyncClient(address, tls=tls) as a:
            return await asyncio.gather(*(a.forward(1, x) for _ in range(4)))

    assert all(r.output.shape == x.shape for r in asyncio.run(main()))


def test_cluster_tls_refuses_clients_without_its_certificates(tls_cluster):
    address, yaml_path = tls_cluster
    with pytest.raises(moe_cluster.Error):  # plaintext: the router drops it at the handshake
        with moe_cluster.Client(address, timeout_s=5) as c:
            c.info()
    ca = os.path.join(os.path.dirname(yaml_path), "certs", "ca.pem")
    ca_only = ssl.create_default_context(cafile=ca)
    with pytest.raises(moe_cluster.Error):  # the CA but no client certificate (client_auth)
        with moe_cluster.Client(address, tls=ca_only, timeout_s=5) as c:
            c.info()


def test_tls_context_without_a_tls_section(work, tiny_model):
    config = write_config(work, tiny_model)
    assert moe_cluster.tls_context(config["_path"]) is None
    assert moe_cluster.router_address(config["_path"]) == config["router"]["listen"]
