"""Client and AsyncClient: one Cap'n Proto connection to a router, ``Router.info`` and
``Router.forward``.

AsyncClient runs on the caller's asyncio loop (pycapnp 2.x drives the KJ event loop from asyncio;
the client enters ``capnp.kj_loop()`` on that loop itself unless the caller already did). Any
number of calls may be in flight on its one connection.

Client is the same calls, blocking. Its connection lives on one background thread per process (the
"reactor": an asyncio loop with the KJ loop entered on it), so a Client works from any thread, next
to an AsyncClient on the caller's own loop, and inside a program that already runs an asyncio loop
(a notebook); every Cap'n Proto object stays on the reactor thread. The caller's thread only waits.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import os
import ssl as _ssl
import threading
import weakref

import capnp
import numpy as np

from . import _tensors
from ._schema import moe
from .errors import (DeadlineExceeded, Error, InvalidArgument, Unavailable, connection_lost,
                     translate)

DEFAULT_TIMEOUT_S = 60.0
# Replies are as large as router.max_tokens × hidden × 4 bytes (< 512 MiB); Cap'n Proto's default
# reader limit (64 MiB) would refuse the largest.
_TRAVERSAL_LIMIT_WORDS = 1 << 32


@dataclasses.dataclass(frozen=True)
class ShardStatus:
    name: str
    address: str
    reachable: bool
    error: str


@dataclasses.dataclass(frozen=True)
class Info:
    """What the router serves (``Router.info``)."""

    family: str                  # config.json's model_type: "mixtral", "qwen2_moe", …
    hidden_size: int
    intermediate_size: int
    num_experts: int
    top_k: int
    num_layers: int              # decoder layers of the model (0: a server that does not say)
    moe_layers: tuple[int, ...]  # the decoder layers that are MoE layers (forward's `layer`)
    fingerprint: str             # of the checkpoint the router loaded (README "Model fingerprint")
    max_tokens: int              # the most tokens one forward may carry
    input_dtypes: tuple[str, ...]  # what `hidden` may be on the wire
    output_dtype: str            # what `output` is on the wire (returned in the input's dtype)
    expert_dtype: str            # the experts' compute dtype, when the server says ("" if not)
    backend: str
    version: str
    ready: bool                  # every expert of every MoE layer has a reachable shard
    draining: bool
    shards: tuple[ShardStatus, ...]
    family_name: str = ""        # the family as the router names it ("Qwen3-MoE"); "" if not said
    routing_recipe: str = ""     # the routing rule in use ("softmax, top-k, renormalize")

    @property
    def model_type(self) -> str:
        return self.family


@dataclasses.dataclass(frozen=True)
class Routing:
    """Per token t and slot j < k: ``experts[t, j]`` with final weight ``weights[t, j]`` (0 where
    ``dropped[t, j]``); ``affected[t]``: the token lost or changed an expert because none of its
    replicas was available. Arrays of the input's kind (numpy, or torch on the input's device)."""

    k: int
    experts: object
    weights: object
    dropped: object
    affected: object


@dataclasses.dataclass(frozen=True)
class Stats:
    tokens: int
    shard_calls: int
    rows_sent: int
    gate_us: int
    dispatch_us: int
    total_us: int           # the router's time for this call, from admission to reply
    dropped_assignments: int
    router_rows: int
    shared_rows: int
    batch_requests: int
    batch_tokens: int


class ForwardResult:
    """``output``: the layer's output, the input's kind, shape, dtype and device. ``routing``:
    a Routing when asked for (``return_routing=True``), else None. ``logits``: the layer's router
    logits [T, E] (float32, the input's kind and device) when the server returned them (models
    with a gating residual, MoE++: pass them as the next MoE layer's ``prev_logits``; or when
    routing was asked for), else None. ``stats``: the server's counts and times."""

    __slots__ = ("output", "routing", "logits", "_stats")

    def __init__(self, output, routing, logits, stats):
        self.output = output
        self.routing = routing
        self.logits = logits
        self._stats = stats  # Stats, or the ForwardStats message's bytes until first read

    @property
    def stats(self) -> Stats:
        if isinstance(self._stats, bytes):
            with moe.ForwardStats.from_bytes(self._stats) as s:
                self._stats = Stats(s.tokens, s.shardCalls, s.rowsSent, s.gateMicros,
                                    s.dispatchMicros, s.totalMicros, s.droppedAssignments,
                                    s.routerRows, s.sharedRows, s.batchRequests, s.batchTokens)
        return self._stats

    def __repr__(self):
        shape = tuple(getattr(self.output, "shape", ()))
        return (f"ForwardResult(output={type(self.output).__name__}{list(shape)}, "
                f"routing={'yes' if self.routing is not None else None}, "
                f"logits={'yes' if self.logits is not None else None})")


def _parse_address(address) -> tuple[str, int]:
    if isinstance(address, tuple) and len(address) == 2:
        return str(address[0]), int(address[1])
    text = str(address)
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidArgument(f"address: expected HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _ssl_context(tls):
    """None (plain TCP), True (verify against the system's CAs), or an ssl.SSLContext."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return _ssl.create_default_context()
    if isinstance(tls, _ssl.SSLContext):
        return tls
    raise InvalidArgument(f"tls: expected None, True or an ssl.SSLContext, got {type(tls).__name__}")


class _KjLoops:
    """Who entered ``capnp.kj_loop()`` on which asyncio loop: the first AsyncClient on a loop
    enters it, the last one to close leaves it. A loop whose KJ loop the caller entered is used
    as it is and never left here."""

    _held: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list]" = weakref.WeakKeyDictionary()

    @classmethod
    async def acquire(cls, loop):
        held = cls._held.get(loop)
        if held is None:
            if getattr(loop, "_kj_loop", None) is not None:
                held = [None, 0]  # the caller's own kj_loop
            else:
                cm = capnp.kj_loop()
                await cm.__aenter__()
                held = [cm, 0]
            cls._held[loop] = held
        held[1] += 1

    @classmethod
    async def release(cls, loop):
        held = cls._held.get(loop)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del cls._held[loop]
            if held[0] is not None:
                await held[0].__aexit__(None, None, None)


def _list(reader, dtype):
    n = len(reader)
    return np.fromiter(reader, dtype=dtype, count=n) if n else np.zeros(0, dtype=dtype)


def _like_kind(values: np.ndarray, like):
    """numpy as it is for a numpy caller; a torch tensor on the input's device for a torch one."""
    if like is None or like.kind == "numpy":
        return values
    torch = _tensors._torch()
    return torch.from_numpy(values).to(like.device)


class AsyncClient:
    """``async with AsyncClient("127.0.0.1:7100") as c: r = await c.forward(0, x)``.

    ``timeout_s`` bounds every call (``DeadlineExceeded`` after it; the server has its own
    deadlines too). ``tls``: None for plain TCP, or an ``ssl.SSLContext`` (or True for the default
    context) when the router is reached through TLS. The connection opens on the first call (or
    ``await connect()``); calls may be issued concurrently from many tasks.
    """

    def __init__(self, address, *, timeout_s: float = DEFAULT_TIMEOUT_S, tls=None):
        self.address = address if isinstance(address, str) else "%s:%d" % tuple(address)
        self._host, self._port = _parse_address(address)
        if timeout_s is None or timeout_s <= 0:
            raise InvalidArgument(f"timeout_s: must be > 0, got {timeout_s!r}")
        self._timeout_s = float(timeout_s)
        self._pending = {}  # future -> deadline, in the order sent (so by deadline)
        self._watchdog = None  # the loop's timer for the earliest deadline
        self._ssl = _ssl_context(tls)
        self._loop = None
        self._rpc = None
        self._stream = None
        self._router = None
        self._connecting = None
        self._kj_held = False
        self._closed = False
        self._host_only = False  # Client: leave accelerator copies to the caller's thread

    @classmethod
    def from_config(cls, config_path, **kwargs) -> "AsyncClient":
        """The router of a cluster YAML (``router.listen``), with the TLS of its ``tls:`` section
        (``moe_cluster.tls_context``) unless ``tls=`` is given."""
        from ._config import router_address, tls_context
        kwargs.setdefault("tls", tls_context(config_path))
        return cls(router_address(config_path), **kwargs)

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    # -- connection ---------------------------------------------------------------------------

    async def connect(self) -> "AsyncClient":
        if self._router is not None:
            return self
        if self._closed:
            raise Unavailable(f"{self.address}: client is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise Error(f"{self.address}: an AsyncClient belongs to the event loop it first ran "
                        "on; make one per loop")
        if self._connecting is None or self._connecting.done():
            self._connecting = loop.create_task(self._open(loop))
        await asyncio.shield(self._connecting)
        return self

    async def _open(self, loop):
        self._loop = loop
        if not self._kj_held:
            await _KjLoops.acquire(loop)
            self._kj_held = True
        try:
            kwargs = {}
            if self._ssl is not None:
                kwargs["ssl"] = self._ssl
                kwargs["server_hostname"] = self._host
            self._stream = await asyncio.wait_for(
                capnp.AsyncIoStream.create_connection(self._host, self._port, **kwargs),
                self.timeout_s)
            self._rpc = capnp.TwoPartyClient(self._stream,
                                             traversal_limit_in_words=_TRAVERSAL_LIMIT_WORDS)
            self._router = self._rpc.bootstrap().cast_as(moe.Router)
        except BaseException as e:
            self._drop_connection()
            exc = translate(e, self.address)
            if exc is e:
                raise
            raise exc from None

    def _drop_connection(self):
        self._router = None
        if self._rpc is not None:
            try:
                self._rpc.close()
            except Exception:
                pass
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:
                pass
        self._rpc = None
        self._stream = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_connection()
        if self._kj_held:
            self._kj_held = False
            await _KjLoops.release(self._loop)

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    def _send(self, request):
        """Sends a request; returns the asyncio future of its reply, which is cancelled (and the
        call with it: Cap'n Proto tells the server) when timeout_s passes first. No task is made
        per call: the future is pycapnp's own."""
        waiter = request.send().__await__()
        try:
            future = next(waiter)  # asyncio.Future.__await__ yields the future itself ...
        except StopIteration as done:  # pragma: no cover - a reply cannot be there already
            future = self._loop.create_future()
            future.set_result(done.value)
            return future
        future._asyncio_future_blocking = False  # ... marked as awaited by a task: it is not
        # Deadlines: one timer for the earliest, not one per call (timeout_s is fixed, so calls
        # are in deadline order in _pending).
        deadline = self._loop.time() + self._timeout_s
        self._pending[future] = deadline
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._expire_due)
        return future

    def _expire_due(self):
        """Cancels every call whose deadline has passed; waits for the next earliest."""
        self._watchdog = None
        now = self._loop.time()
        due = []
        for future, deadline in self._pending.items():
            if deadline > now:
                self._watchdog = self._loop.call_at(deadline, self._expire_due)
                break
            due.append(future)
        for future in due:
            del self._pending[future]
            if not future.done():
                future._moe_expired = True
                future.cancel()

    def _reply(self, future):
        """The reply of a finished future, or the moe_cluster exception for its failure."""
        self._pending.pop(future, None)
        if future.cancelled():
            if getattr(future, "_moe_expired", False):
                raise DeadlineExceeded(f"{self.address}: no reply within timeout_s = "
                                       f"{self.timeout_s:g} s")
            raise asyncio.CancelledError()
        exc = future.exception()
        if exc is None:
            return future.result()
        err = translate(exc, self.address)
        if err is exc:
            raise exc
        if connection_lost(exc):
            self._drop_connection()  # the next call reconnects
        raise err from None

    async def _call(self, request):
        future = self._send(request)
        try:
            await future
        except asyncio.CancelledError:
            if not future.cancelled() or not getattr(future, "_moe_expired", False):
                future.cancel()  # the caller's task was cancelled: so is the call
                self._pending.pop(future, None)
                raise
        except BaseException:
            pass
        return self._reply(future)

    # -- calls --------------------------------------------------------------------------------

    async def info(self) -> Info:
        await self.connect()
        reply = await self._call(self._router.info_request())
        i = reply.info
        return Info(
            family=i.modelType, hidden_size=i.hiddenSize, intermediate_size=i.intermediateSize,
            num_experts=i.numExperts, top_k=i.topK, num_layers=i.numLayers,
            moe_layers=tuple(i.moeLayers),
            fingerprint=i.fingerprint, max_tokens=i.maxTokens,
            input_dtypes=("f32", "bf16", "f16"), output_dtype="f32", expert_dtype=i.dtype,
            backend=i.backend, version=i.version, ready=i.ready, draining=i.draining,
            shards=tuple(ShardStatus(s.name, s.address, s.reachable, s.error) for s in i.shards),
            family_name=i.familyName, routing_recipe=i.routingRecipe)

    async def forward(self, layer: int, hidden, *, prev_logits=None, return_routing: bool = False,
                      noise_seed: int | None = None) -> ForwardResult:
        """The MoE layer ``layer``'s output for ``hidden`` [..., H] (numpy or torch; f32, bf16,
        f16, or f64 sent as f32). ``prev_logits``: MoE++'s gating residual (the previous MoE
        layer's ``logits``). ``return_routing``: also return each token's experts and weights.
        ``noise_seed``: this call's seed for noisy top-k (clusters with routing.noisy_topk)."""
        h = _tensors.prepare(hidden, "hidden")
        p = _tensors.prepare(prev_logits, "prev_logits") if prev_logits is not None else None
        return await self._forward(layer, h, p, return_routing, noise_seed)

    async def _forward(self, layer, h, p, return_routing, noise_seed):
        if self._router is None:
            await self.connect()
        reply = await self._call(self._forward_request(layer, h, p, return_routing, noise_seed))
        return self._result(reply, h, return_routing)

    def _forward_request(self, layer, h, p, return_routing, noise_seed):
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or layer < 0:
            raise InvalidArgument(f"layer: expected a non-negative integer, got {layer!r}")
        req = self._router.forward_request()
        req.layer = int(layer)
        _fill(req.init("hidden"), h)
        if p is not None:
            _fill(req.init("prevLogits"), p)
        if return_routing or noise_seed is not None:
            opts = req.init("options")
            opts.returnRouting = bool(return_routing)
            if noise_seed is not None:
                if not isinstance(noise_seed, (int, np.integer)) or not 0 <= noise_seed < 2**64:
                    raise InvalidArgument(f"noise_seed: expected an integer in [0, 2^64), "
                                          f"got {noise_seed!r}")
                opts.noiseSeed = int(noise_seed)
        return req

    def _result(self, reply, h, return_routing) -> ForwardResult:
        out = reply.output
        view = out.get_data_as_view("data")
        if len(view) == 4 * h.rows * h.cols:  # f32 [T, H] as sent: no need to read the shape
            rows, cols = h.rows, h.cols
        else:
            shape = list(out.shape)
            rows, cols = (shape + [0, 0])[:2]
        like = h
        if self._host_only and h.kind == "torch" and h.device.type != "cpu":
            like = _tensors.Prepared(None, h.wire, h.rows, h.cols, h.shape, "torch", h.dtype,
                                     _tensors._torch().device("cpu"))
        shape = h.shape if rows * cols == h.rows * h.cols else None
        output = _tensors.read(view, rows, cols, like, shape)
        logits = None
        if reply._has("gateLogits") and len(reply.gateLogits.shape) == 2:
            g = reply.gateLogits
            logits_like = None
            if like.kind == "torch":
                torch = _tensors._torch()
                logits_like = _tensors.Prepared(None, "f32", 0, 0, (), "torch", torch.float32,
                                                like.device)
            logits = _tensors.read(g.get_data_as_view("data"), g.shape[0], g.shape[1],
                                   logits_like)
        routing = None
        if return_routing and reply._has("routing"):
            r = reply.routing
            k = int(r.k)
            tokens = len(r.experts) // k if k else 0
            affected = _list(r.affected, np.bool_)
            if affected.size == 0:
                affected = np.zeros(tokens, dtype=np.bool_)
            routing = Routing(
                k=k,
                experts=_like_kind(_list(r.experts, np.int64).reshape(tokens, k), like),
                weights=_like_kind(_list(r.weights, np.float32).reshape(tokens, k), like),
                dropped=_like_kind(_list(r.dropped, np.bool_).reshape(tokens, k), like),
                affected=_like_kind(affected, like))
        # The stats are kept as their own small message and read when asked for.
        return ForwardResult(output, routing, logits, reply.stats.as_builder().to_bytes())


def _fill(t, p: _tensors.Prepared) -> None:
    t.dtype = p.wire
    shape = t.init("shape", 2)
    shape[0] = p.rows
    shape[1] = p.cols
    direct = _tensors.contiguous_bytes(p)
    if direct is not None:
        t.data = direct  # Cap'n Proto copies the caller's buffer into the message: one copy
        return
    t.init("data", p.nbytes)
    _tensors.write(t.get_data_as_view("data"), p)


class _Reactor:
    """The process's background thread for Client: an asyncio loop with the KJ loop entered."""

    _lock = threading.Lock()
    _instance: "_Reactor | None" = None

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.clients: "weakref.WeakSet[AsyncClient]" = weakref.WeakSet()
        started = threading.Event()
        self._kj = None

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="moe-cluster-client", daemon=True)
        self.thread.start()
        started.wait()
        self.submit(self._enter()).result()

    async def _enter(self):
        self._kj = capnp.kj_loop()
        await self._kj.__aenter__()

    async def _leave(self):
        for c in list(self.clients):
            c._drop_connection()
        if self._kj is not None:
            await self._kj.__aexit__(None, None, None)
            self._kj = None

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self):
        if not self.thread.is_alive():
            return
        try:
            self.submit(self._leave()).result(timeout=10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    @classmethod
    def get(cls) -> "_Reactor":
        with cls._lock:
            r = cls._instance
            if r is None or r.pid != os.getpid() or not r.thread.is_alive():
                r = cls._instance = _Reactor()
            return r

    @classmethod
    def shutdown(cls):
        with cls._lock:
            r, cls._instance = cls._instance, None
        if r is not None and r.pid == os.getpid():
            r.stop()


atexit.register(_Reactor.shutdown)


class Client:
    """``with Client("127.0.0.1:7100") as c: y = c.forward(0, x).output``.

    The same calls as AsyncClient, blocking; safe to share between threads (calls from several
    threads are in flight at once on the one connection). Connects in the constructor:
    ``Unavailable`` when nothing answers at ``address``.
    """

    @classmethod
    def from_config(cls, config_path, **kwargs) -> "Client":
        """``with Client.from_config("cluster.yaml") as c``: the router of a cluster YAML
        (``router.listen``), with the TLS of its ``tls:`` section (``moe_cluster.tls_context``)
        unless ``tls=`` is given."""
        from ._config import router_address, tls_context
        kwargs.setdefault("tls", tls_context(config_path))
        return cls(router_address(config_path), **kwargs)

    def __init__(self, address, *, timeout_s: float = DEFAULT_TIMEOUT_S, tls=None):
        self._async = AsyncClient(address, timeout_s=timeout_s, tls=tls)
        self._async._host_only = True
        self.address = self._async.address
        self._reactor = _Reactor.get()
        self._reactor.clients.add(self._async)
        self._closed = False
        try:
            self._run(self._async.connect())
        except BaseException:
            self.close()
            raise

    @property
    def timeout_s(self) -> float:
        return self._async.timeout_s

    def _run(self, coro):
        reactor = self._reactor
        if reactor.pid != os.getpid():
            coro.close()
            raise Unavailable(f"{self.address}: this Client was made in another process; make a "
                              "new one after fork")
        future = reactor.submit(coro)
        try:
            # The call's own deadline is timeout_s; the slack only guards against a lost reactor.
            return future.result(timeout=self.timeout_s + 30)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceeded(f"{self.address}: no reply within timeout_s = "
                                   f"{self.timeout_s:g} s") from None
        except BaseException:
            future.cancel()
            raise

    def info(self) -> Info:
        return self._run(self._async.info())

    def _call_forward(self, layer, h, p, return_routing, noise_seed):
        """One forward on the reactor without a task: the request is built and sent by a
        callback, and the reply read by the future's done-callback, both on the reactor thread;
        this thread waits on a lock."""
        reactor, a = self._reactor, self._async
        if reactor.pid != os.getpid():
            raise Unavailable(f"{self.address}: this Client was made in another process; make a "
                              "new one after fork")
        if a._router is None:  # reconnect after a lost connection
            self._run(a.connect())
        done = threading.Lock()
        done.acquire()
        box = []

        def finished(future):
            try:
                box.append((True, a._result(a._reply(future), h, return_routing)))
            except BaseException as e:
                box.append((False, e))
            done.release()

        def start():
            try:
                if a._router is None:
                    raise Unavailable(f"{self.address}: not connected")
                future = a._send(a._forward_request(layer, h, p, return_routing, noise_seed))
            except BaseException as e:
                box.append((False, translate(e, self.address)))
                done.release()
                return
            box.append(future)
            future.add_done_callback(finished)

        reactor.loop.call_soon_threadsafe(start)
        try:
            # The call's own deadline is timeout_s; the slack only guards against a lost reactor.
            if not done.acquire(timeout=self.timeout_s + 30):
                raise DeadlineExceeded(f"{self.address}: no reply within timeout_s = "
                                       f"{self.timeout_s:g} s")
        except BaseException:  # KeyboardInterrupt: the call is cancelled
            if box and isinstance(box[0], asyncio.Future):
                reactor.loop.call_soon_threadsafe(box[0].cancel)
            raise
        ok, value = box[-1]
        if not ok:
            raise value
        return value

    def forward(self, layer: int, hidden, *, prev_logits=None, return_routing: bool = False,
                noise_seed: int | None = None) -> ForwardResult:
        """See AsyncClient.forward."""
        h = _tensors.to_host(_tensors.prepare(hidden, "hidden"))
        p = None
        if prev_logits is not None:
            p = _tensors.to_host(_tensors.prepare(prev_logits, "prev_logits"))
        result = self._call_forward(layer, h, p, return_routing, noise_seed)
        if h.kind == "torch" and h.device.type != "cpu":
            result.output = _tensors.to_device(result.output, h)
            if result.logits is not None:
                result.logits = result.logits.to(h.device)
            if result.routing is not None:
                r = result.routing
                result.routing = Routing(r.k, r.experts.to(h.device), r.weights.to(h.device),
                                         r.dropped.to(h.device), r.affected.to(h.device))
        return result

    def close(self) -> None:
        """Closes the connection (calls in flight fail with Unavailable). Idempotent."""
        if self.__dict__.get("_closed", True):
            return
        self._closed = True
        reactor = self._reactor
        if reactor.pid != os.getpid() or not reactor.thread.is_alive():
            return
        future = reactor.submit(self._async.close())
        if threading.current_thread() is not reactor.thread:  # never wait for ourselves
            try:
                future.result(timeout=10)
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # The garbage collector may run this on any thread, the reactor's included: schedule the
        # close, never wait for it.
        if self.__dict__.get("_closed", True):
            return
        self._closed = True
        reactor = self._reactor
        if reactor.pid == os.getpid() and reactor.thread.is_alive():
            try:
                reactor.loop.call_soon_threadsafe(
                    lambda a=self._async: reactor.loop.create_task(a.close()))
            except RuntimeError:  # the loop is closed: nothing left to close
                pass
