"""Ray on a local CPU cluster: 2 engine replicas of a tiny model give the in-process results; a
replica killed mid-run is restarted and its chunks retried: every chunk documented, none lost."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is the optional extra `ray` (pip install '.[ray]')")

GEN = dict(quantization="none", max_new_tokens=8, max_seq_length=1024, device="cpu", use_flash_attention=False,
           max_batch_size=8)
CHUNKS = [dict(code=f"def f{i}(x):\n    return x * {i} + {i % 3}", name=f"f{i}", path="m.py") for i in range(12)]


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module, with room for the fixture's replicas and the CLI's."""
    ray.init(num_cpus=4, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_gen(cluster, tiny_checkpoint):
    from app.llm.backends.ray_replicas import RayConfig, RayDocGenerator

    gen = RayDocGenerator(RayConfig(str(tiny_checkpoint("tiny")), replicas=2, generator_kwargs=GEN, max_in_flight=3))
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    from app.llm.local_client_optimized import create_optimized_local_generator

    with create_optimized_local_generator(str(tiny_checkpoint("tiny")), **GEN) as gen:
        return [(r.text, r.completion_tokens) for r in gen.generate_batch(CHUNKS)]


def test_two_replicas_equal_one_process(ray_gen, reference):
    got = ray_gen.generate_batch(CHUNKS)
    assert [(r.text, r.completion_tokens) for r in got] == reference
    assert {r.extra["replica"] for r in got} == {"replica-0", "replica-1"}


def test_killed_replica_is_restarted_and_nothing_is_lost(ray_gen, reference):
    victim = ray_gen.actors[0]
    pid = ray.get(victim.info.remote())["pid"]

    def kill_when_busy():
        deadline = time.monotonic() + 30
        while ray_gen.pool.endpoints[0].in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        ray.kill(victim, no_restart=False)  # the process dies; Ray restarts the actor

    t = threading.Thread(target=kill_when_busy)
    t.start()
    got = asyncio.run(ray_gen.generate_batch_async(CHUNKS))
    t.join()
    assert all(r.ok for r in got)
    assert [(r.text, r.completion_tokens) for r in got] == reference
    assert ray.get(victim.info.remote())["pid"] != pid  # a new process serves replica 0



def test_docgen_run_ray_documents_like_one_process(cluster, tiny_checkpoint, tmp_path):
    """`docgen run --ray --replicas 2` (on the running cluster) stores what an in-process run stores."""
    import shutil
    import sqlite3

    from app.cli import main
    from tests.docgen.conftest import DEMO

    flags = ["--plain", "--no-retry", "--max-new-tokens", "8", "--max-seq-length", "1024", "--quantization", "none",
             "--model", str(tiny_checkpoint("tiny"))]
    stores = []
    for name, extra in (("local", []), ("ray", ["--ray", "--replicas", "2"])):
        shutil.copytree(DEMO / "geometry", tmp_path / name / "geometry")
        assert main(["run", str(tmp_path / name), *flags, *extra]) == 0
        db = sqlite3.connect(str(tmp_path / name / ".docgen" / "docgen.sqlite"))
        stores.append(dict(db.execute("SELECT u.uid, r.text FROM units u JOIN results r ON u.key = r.key")))
        db.close()
    assert len(stores[0]) >= 8 and stores[0] == stores[1]
