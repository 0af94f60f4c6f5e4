"""Load test of `clip serve` on loopback: N concurrent clients for T seconds; p50/p99 latency,
throughput, errors, and the server's memory (RSS sampled each second) over the run.

    python bench/bench_serve_load.py --clients 50 --seconds 30

The server is `python -m clip serve` in its own process over a built HNSW index of CLIP-like
vectors (bench_index.ClipLike, at the embedded model's width) with the embedded model for text
queries. Half the clients send text queries to /search (a model call each), half send
clip-retrieval /knn-service requests with embedding_input (index only). Clients and server share
this machine's cores.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from bench_index import ClipLike, write_embedding_dir

WORDS = ["a red car", "a dog on a beach", "two cats", "a city at night", "a bowl of soup", "a mountain lake"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def client(number, url, until, vectors, latencies, errors):
    import httpx

    rng = np.random.default_rng(number)
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < until:
            if number % 2:
                request = http.post(
                    f"{url}/knn-service",
                    content=json.dumps(
                        {
                            "embedding_input": vectors[rng.integers(len(vectors))].tolist(),
                            "num_images": 10,
                            "deduplicate": False,
                            "modality": "text",
                        }
                    ),
                )
            else:
                request = http.post(f"{url}/search", json={"text": WORDS[rng.integers(len(WORDS))], "k": 10})
            started = time.perf_counter()
            try:
                response = await request
                ok = response.status_code == 200
            except Exception:  # noqa: BLE001 - every failure counts as an error
                ok = False
            latencies.append(time.perf_counter() - started)
            if not ok:
                errors.append(number)


async def load(url, clients, seconds, vectors):
    latencies, errors = [], []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(i, url, until, vectors, latencies, errors) for i in range(clients)))
    return latencies, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    from clip.index.build import build_index
    from clip.tasks.backends import load_encoder

    dim = load_encoder().dim
    work = tempfile.mkdtemp(prefix="bench_serve_")
    try:
        data = ClipLike(dim)
        write_embedding_dir(os.path.join(work, "emb"), data.sample(args.n, seed=1))
        manifest_path = os.path.join(work, "emb", "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["weights"] = None  # generated vectors: no model made them
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
        info = build_index(os.path.join(work, "emb"), kind="hnsw")
        queries = data.sample(200, seed=2)
        port = free_port()
        env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        server = subprocess.Popen(
            [sys.executable, "-m", "clip", "serve", os.path.join(work, "emb"), "--port", str(port)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"{url}/indices-list", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(load(url, 4, 3, queries))  # warm-up
        memory, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                memory.append(rss_mib(server.pid))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        latencies, errors = asyncio.run(load(url, args.clients, args.seconds, queries))
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        server.terminate()
        server.wait(10)
        ms = 1e3 * np.asarray(latencies)
        print(
            json.dumps(
                {
                    "clients": args.clients,
                    "seconds": round(wall, 1),
                    "index": f"{info['kind']} {args.n} x {dim}",
                    "requests": len(latencies),
                    "errors": len(errors),
                    "throughput_rps": round(len(latencies) / wall, 1),
                    "p50_ms": round(float(np.percentile(ms, 50)), 1),
                    "p99_ms": round(float(np.percentile(ms, 99)), 1),
                    "server_rss_mib_first_last_max": [round(memory[0]), round(memory[-1]), round(max(memory))],
                    "cpus": os.cpu_count(),
                    "load_avg": [round(x, 1) for x in os.getloadavg()],
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
