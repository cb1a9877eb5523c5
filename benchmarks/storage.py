"""Tables on object storage and their maintenance, each figure a ratio measured in one run:

- compaction: a layer-partitioned table written the way explainers side by side write it (one
  commit per layer and explainer, a file each), read whole before and after `maintain_table`;
- object storage: the same partition writes and a whole-table read on a local S3 server (moto,
  in its own process on loopback) against a local folder.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import numpy as np
import polars as pl

from autointerp.storage.delta import read_table, write_partitions
from autointerp.storage.maintenance import maintain_table
from benchmarks.common import best_of, save

LAYERS = 30
EXPLAINERS = 6
NEURONS = 1536


def layer_rows(layer: int, explainer: str, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "layer": np.full(NEURONS, layer, dtype=np.int32),
            "neuron": np.arange(NEURONS, dtype=np.int32),
            "explainer": explainer,
            "ev_correlation": rng.random(NEURONS),
            "explanation": [f"the tokens {i}" for i in range(NEURONS)],
        }
    )


def fill(uri: str, options: dict[str, str] | None = None) -> None:
    for layer in range(LAYERS):
        for e in range(EXPLAINERS):
            write_partitions(
                uri,
                layer_rows(layer, f"explainer-{e}", layer * EXPLAINERS + e),
                partition_column="layer",
                partitions=[layer],
                replace_within={"explainer": [f"explainer-{e}"]},
                commit_metadata={},
                storage_options=options,
            )


def compaction(folder: str) -> dict:
    uri = f"{folder}/scores"
    fill(uri)
    [before] = best_of(3, lambda: read_table(uri))
    report = maintain_table(uri, retention_hours=0)
    [after] = best_of(3, lambda: read_table(uri))
    return {
        "files_before": report.files_before,
        "files_after": report.files_after,
        "read_s_before": round(before, 4),
        "read_s_after": round(after, 4),
        "read_time_ratio_after_to_before": round(after / before, 3),
    }


def s3_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5).close()
            return server, endpoint
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the local S3 server did not start")


def object_storage(folder: str) -> dict:
    import os

    import boto3

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    server, endpoint = s3_server()
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
        runs = iter(range(100))
        local_write, s3_write = best_of(
            2,
            lambda: fill(f"{folder}/local-{next(runs)}"),
            lambda: fill(f"s3://{bucket}/t-{next(runs)}", options),
        )
        local_uri, s3_uri = f"{folder}/local-0", f"s3://{bucket}/t-1"
        local_read, s3_read = best_of(
            3,
            lambda: read_table(local_uri),
            lambda: read_table(s3_uri, storage_options=options),
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    commits = LAYERS * EXPLAINERS
    return {
        "commits": commits,
        "local_write_s": round(local_write, 3),
        "s3_write_s": round(s3_write, 3),
        "s3_to_local_write_ratio": round(s3_write / local_write, 2),
        "s3_to_local_read_ratio": round(s3_read / local_read, 2),
    }


def main() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result = {
            "table": f"{LAYERS} layers x {EXPLAINERS} explainers x {NEURONS} neurons",
            "compaction": compaction(folder),
            "object_storage": object_storage(folder),
        }
    save("storage", result)
    return result
