"""openpi's websocket policy protocol, both ends, without the openpi-client package (which pins
numpy < 2): ``OpenPIRemotePolicy`` drives the robot from a policy served elsewhere (pi0 / pi0.5 on
a GPU machine, ``scripts/serve_policy.py`` of openpi), ``serve`` serves a backend of this suite the
same way (``aloe-serve-policy``), for tests, benchmarks and training machines.

The protocol (openpi_client.websocket_client_policy / websocket_policy_server): on connect the
server sends its metadata (a msgpack map); then per request the client sends one observation map
and receives one action map with ``actions`` (H, A); a server-side error arrives as a text frame
holding the traceback. Arrays travel as msgpack maps ``{__ndarray__: True, data, dtype, shape}``
(openpi_client.msgpack_numpy).

Observation keys sent: ``observation/<camera>`` uint8 (h, w, 3) per camera, ``observation/state``
float32 (P,), ``prompt`` str. A server of this suite also sends ``aloe_contract`` (the
PolicyConfig) and ``policy_id`` in its metadata; for other servers give the contract as a JSON
file (``contract`` option / policy_node parameter ``remote_contract``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from . import BackendError

log = logging.getLogger("aloe_policy.openpi_remote")


# --- msgpack + numpy, as openpi_client.msgpack_numpy ---------------------------------------------

def _pack_default(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "VOc":
            raise TypeError(f"unsupported array dtype {obj.dtype}")
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_hook(obj):
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj) -> bytes:
    import msgpack

    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def unpackb(data: bytes):
    import msgpack

    return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False)


def openpi_observation(obs_single, cameras) -> dict:
    """One observation of docs/interfaces.md -> the openpi request map."""
    out = {f"observation/{cam}": np.ascontiguousarray(obs_single["images"][cam], dtype=np.uint8) for cam in cameras}
    out["observation/state"] = np.asarray(obs_single["proprio"], dtype=np.float32)
    out["prompt"] = str(obs_single["task"])
    return out


# --- client: a backend ---------------------------------------------------------------------------

class OpenPIRemotePolicy:
    """A policy served over openpi's websocket protocol, behind the backend API (no loss: its
    improvement happens where it is trained, from the exported advantages)."""

    def __init__(self, uri: str, device: str = "cpu", contract: str | dict | None = None, timeout_s: float = 5.0):
        from aloe_policy.model import PolicyConfig

        if not uri.startswith(("ws://", "wss://")):
            raise BackendError(f"openpi_remote needs a ws://host:port address, got {uri!r}")
        self.uri, self.timeout_s, self.device = uri, float(timeout_s), device
        self._ws = None
        metadata = self._connect()
        given = json.loads(Path(contract).read_text()) if isinstance(contract, str) and contract else contract
        spec = given or metadata.get("aloe_contract")
        if not spec:
            raise BackendError(f"{uri} sent no aloe_contract in its metadata (keys {sorted(metadata)}): give the "
                               "robot contract (a PolicyConfig JSON: cameras, image size, proprio, action names, "
                               "chunk horizon, control period) as the remote_contract parameter")
        self.config = PolicyConfig.from_dict(spec)
        served = metadata.get("policy_id")
        self.policy_id = str(served) if served else hashlib.sha256(
            json.dumps({"uri": uri, "contract": self.config.to_dict()}, sort_keys=True).encode()).hexdigest()[:16]
        self.metadata = metadata

    def _connect(self) -> dict:
        from websockets.sync.client import connect

        try:
            self._ws = connect(self.uri, compression=None, max_size=None, open_timeout=self.timeout_s)
            return unpackb(self._ws.recv(timeout=self.timeout_s))
        except (OSError, TimeoutError) as exc:
            self._ws = None
            raise BackendError(f"cannot reach the policy server at {self.uri} within {self.timeout_s:g} s: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - websockets' protocol errors: same meaning for the robot
            self._ws = None
            raise BackendError(f"policy server at {self.uri} failed the handshake: {exc}") from exc

    def infer(self, request: dict) -> dict:
        """One request -> the server's response map; reconnects once if the connection was lost."""
        return self.infer_many([request])[0]

    def infer_many(self, requests: list[dict], in_flight: int = 1) -> list[dict]:
        """Requests -> responses in order, up to ``in_flight`` sent before the first reply is read.
        The protocol has no batches, but a server answers a connection's requests in order, so
        pipelining hides the round trips behind the server's work (the critic's sample bank)."""
        if self._ws is None:
            self._connect()
        replies, sent = [], 0
        try:
            while len(replies) < len(requests):
                while sent < len(requests) and sent - len(replies) < max(1, in_flight):
                    self._ws.send(packb(requests[sent]))
                    sent += 1
                replies.append(self._ws.recv(timeout=self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - timeout, closed connection: drop it, next call reconnects
            self.close()
            raise BackendError(f"policy server {self.uri}: no answer ({type(exc).__name__}: {exc}); "
                               "reconnecting on the next request") from exc
        out = []
        for reply in replies:
            if isinstance(reply, str):  # the server's traceback
                raise BackendError(f"policy server {self.uri} failed:\n{reply}")
            out.append(unpackb(reply))
        return out

    def _actions(self, response: dict) -> np.ndarray:
        c = self.config
        actions = np.asarray(response["actions"], np.float32)
        if actions.ndim != 2 or actions.shape[1] != c.action_dim or actions.shape[0] < 1:
            raise BackendError(f"policy server {self.uri} returned actions of shape {actions.shape}; the contract "
                               f"says (H, {c.action_dim})")
        return actions[: c.chunk_horizon]

    def predict_chunk(self, obs_single, generator: torch.Generator | None = None) -> np.ndarray:
        return self._actions(self.infer(openpi_observation(obs_single, self.config.camera_names)))

    def sample(self, obs, n: int = 1, generator: torch.Generator | None = None, in_flight: int = 16) -> torch.Tensor:
        """(B, n, H, A): one request per observation and sample (the protocol has no batches),
        ``in_flight`` of them pipelined on the connection."""
        B = len(obs["task"])
        requests = []
        for b in range(B):
            single = {"images": {c: np.asarray(v[b]) for c, v in obs["images"].items()},
                      "proprio": np.asarray(obs["proprio"][b]), "task": obs["task"][b]}
            requests += [openpi_observation(single, self.config.camera_names)] * n
        chunks = [self._actions(r) for r in self.infer_many(requests, in_flight)]
        return torch.from_numpy(np.stack(chunks).reshape(B, n, self.config.chunk_horizon, self.config.action_dim))

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._ws = None


def load_openpi_remote(source: str, device: str = "cpu", **options) -> OpenPIRemotePolicy:
    return OpenPIRemotePolicy(source, device=device, **options)


# --- server --------------------------------------------------------------------------------------

def serve(backend, host: str = "0.0.0.0", port: int = 8000, ready=None) -> None:
    """Serve ``backend`` over openpi's protocol until interrupted (one thread per connection)."""
    import traceback

    from websockets.sync.server import serve as ws_serve

    metadata = {"aloe_contract": backend.config.to_dict(), "policy_id": backend.policy_id}
    cameras = list(backend.config.camera_names)
    generator = torch.Generator().manual_seed(0)

    def handler(ws):
        ws.send(packb(metadata))
        for message in ws:
            try:
                request = unpackb(message)
                single = {"images": {c: np.asarray(request[f"observation/{c}"]) for c in cameras},
                          "proprio": np.asarray(request["observation/state"], np.float32),
                          "task": str(request.get("prompt", ""))}
                t0 = time.perf_counter()
                actions = backend.predict_chunk(single, generator=generator)
                ws.send(packb({"actions": np.asarray(actions, np.float32),
                               "server_timing": {"infer_ms": (time.perf_counter() - t0) * 1e3}}))
            except Exception:  # noqa: BLE001 - as openpi's server: the traceback as text, then close
                ws.send(traceback.format_exc())
                ws.close(1011, "internal error")
                return

    with ws_serve(handler, host, port, compression=None, max_size=None) as server:
        # serve_forever in a thread, this one waiting for it: an interrupt (KeyboardInterrupt, or a signal
        # handler's) then reaches shutdown() (the with's exit) from another thread than serve_forever's, as
        # websockets requires. Called in serve_forever's own thread, shutdown waits for it forever, and so it
        # did when a signal came between `ready` and serve_forever (a test sending SIGINT on the ready line).
        accepting = threading.Thread(target=server.serve_forever, name="aloe-serve-accept", daemon=True)
        accepting.start()
        log.info("policy %s ready for requests on port %d", backend.policy_id, server.socket.getsockname()[1])
        if ready is not None:
            ready(server)
        accepting.join()  # interruptible: signals reach this (main) thread


def main(argv=None) -> int:
    """``aloe-serve-policy``: serve a checkpoint over openpi's websocket protocol."""
    import argparse

    from . import DEFAULT_BACKEND, load_backend

    p = argparse.ArgumentParser(prog="aloe-serve-policy", description=main.__doc__ + (
        "\n\nExample:\n  aloe-serve-policy --checkpoint ckpt/iter_03 --port 8000\n"
        "  # robot: policy_node backend:=openpi_remote checkpoint:=ws://gpu-host:8000"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (or source) of the backend")
    p.add_argument("--backend", default=DEFAULT_BACKEND, help="backend that loads it")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    torch.set_num_threads(1)
    backend = load_backend(a.backend, a.checkpoint, a.device)

    def ready(server):
        print(f"serving {backend.policy_id} on ws://{a.host}:{server.socket.getsockname()[1]}", flush=True)

    def stop(signum, frame):  # SIGINT and SIGTERM stop the server cleanly (connections closed), whatever
        raise KeyboardInterrupt  # disposition it inherited: started in the background by a script, SIGINT
                                 # arrives ignored and Python would install no handler for it

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        serve(backend, a.host, a.port, ready)
    except KeyboardInterrupt:
        log.info("stopped by a signal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
