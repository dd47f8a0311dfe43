"""RayDocGenerator: N engine replicas as Ray actors (one GPU each when GPUs exist, one CPU otherwise),
each an OptimizedLocalDocGenerator; chunks go to the least-loaded replica as slots free up.

    gen = RayDocGenerator(RayConfig("path/to/model", replicas=2, generator_kwargs={...}))
    results = await gen.generate_batch_async(chunks)

A replica that dies is restarted by Ray (max_restarts=-1) and its in-flight chunks are retried
there by Ray (max_task_retries=-1); should a retry still fail with an actor error, the chunk is
resubmitted here, to any replica, up to `max_resubmits` times. Ray is the optional extra `ray`.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from app.llm.backends.endpoints import EndpointPool
from app.llm.generator_base import DocGeneratorBase
from app.llm.types import ChunkLike, CodeChunk, DocResult, as_chunk


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ValueError("--ray needs Ray: pip install '.[ray]' in the docgen checkout (or pip install 'ray>=2.9')") from e
    return ray


@dataclass
class RayConfig:
    model: str
    replicas: int = 1
    address: str | None = None  # None: start a local Ray cluster; else ray.init(address=...)
    generator_kwargs: dict[str, Any] = field(default_factory=dict)  # create_optimized_local_generator's
    max_in_flight: int = 32  # chunks per replica at a time (its engine batches them)
    max_resubmits: int = 3
    start_timeout: float = 900.0  # seconds for every replica to load its model

    def __post_init__(self) -> None:
        if not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"--replicas must be a positive integer, got {self.replicas!r}")


class _Replica:
    """The actor: one engine in its own process. Async methods: chunks share the engine's batch."""

    def __init__(self, model: str, kwargs: dict) -> None:
        from app.llm.local_client_optimized import create_optimized_local_generator

        self.gen = create_optimized_local_generator(model, **kwargs)

    async def generate(self, chunk: CodeChunk) -> DocResult:
        return await self.gen.generate_async(chunk)

    def info(self) -> dict:
        return {"pid": os.getpid(), "max_seq_length": self.gen.max_seq_length}

    def count_tokens(self, text: str) -> int:
        return self.gen.count_tokens(text)

    def count_prompt_tokens(self, chunk: CodeChunk) -> int:
        return self.gen.count_prompt_tokens(chunk)


class RayDocGenerator(DocGeneratorBase):
    """Counts tokens with the first replica's tokenizer (one remote call per count)."""

    def __init__(self, cfg: RayConfig) -> None:
        ray = self._ray = _ray()
        self.cfg = cfg
        self._own_cluster = not ray.is_initialized()
        if self._own_cluster:
            ray.init(address=cfg.address, include_dashboard=False, logging_level="warning",
                     **({} if cfg.address else {"num_cpus": max(cfg.replicas, os.cpu_count() or 1)}))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        res = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        if gpus and gpus < cfg.replicas:
            raise ValueError(f"--replicas {cfg.replicas} needs {cfg.replicas} GPUs; the cluster has {gpus}")
        actor = ray.remote(max_restarts=-1, max_task_retries=-1, **res)(_Replica)
        kwargs = dict(cfg.generator_kwargs)
        kwargs.setdefault("device", "cuda" if gpus else "cpu")
        self.actors = [actor.remote(cfg.model, kwargs) for _ in range(cfg.replicas)]
        try:  # waits until every replica has loaded (or the cluster says it cannot place them)
            infos = ray.get([a.info.remote() for a in self.actors], timeout=cfg.start_timeout)
        except ray.exceptions.GetTimeoutError as e:
            self.close()
            raise ValueError(f"{cfg.replicas} replicas did not start within {cfg.start_timeout:.0f} s; the cluster "
                             f"has {ray.available_resources()} free (each replica needs {res})") from e
        self.model_id = cfg.model
        self.max_seq_length = min(i["max_seq_length"] for i in infos)
        self.pool = EndpointPool([f"replica-{i}" for i in range(cfg.replicas)], cfg.max_in_flight, max_cooldown=2.0)
        self.resubmits = 0

    def count_tokens(self, text: str) -> int:
        return self._ray.get(self.actors[0].count_tokens.remote(text))

    def count_prompt_tokens(self, chunk: ChunkLike) -> int:
        return self._ray.get(self.actors[0].count_prompt_tokens.remote(as_chunk(chunk)))

    async def generate_async(self, chunk: ChunkLike) -> DocResult:
        self._check_open()
        try:
            c = as_chunk(chunk)
        except (TypeError, ValueError) as e:
            return DocResult(chunk_id="", finish_reason="error", error=f"{type(e).__name__}: {e}")
        errors = self._ray.exceptions
        for attempt in range(self.cfg.max_resubmits + 1):
            ep = await self.pool.acquire()
            actor = self.actors[int(ep.url.split("-")[1])]
            try:
                res = await actor.generate.remote(c)
            except (errors.RayActorError, errors.ActorUnavailableError) as e:
                await self.pool.release(ep, ok=False)
                if attempt == self.cfg.max_resubmits:
                    return DocResult(chunk_id=c.id, finish_reason="error",
                                     error=f"replicas kept failing ({type(e).__name__}: {e})")
                self.resubmits += 1
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            await self.pool.release(ep, ok=True)
            res.extra["replica"] = ep.url
            return res
        raise AssertionError("unreachable")

    def report(self) -> dict[str, Any]:
        return {"generator": "RayDocGenerator", "model": self.model_id, "replicas": self.cfg.replicas,
                "served": {e.url: e.served for e in self.pool.endpoints}, "resubmits": self.resubmits}

    def _release(self) -> None:
        for a in self.actors:
            self._ray.kill(a, no_restart=True)
        self.actors = []
        if self._own_cluster and self._ray.is_initialized():
            self._ray.shutdown()
