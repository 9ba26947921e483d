"""The model store at scale: listing 3,000 stored versions, and what one request costs per model.

`python -m benchmarks.store` builds a model directory with the bundled version copied N times
(3,000 by default) and a 256-unit version, then measures in one run, in-process (Flask's test
client, no network):

- GET /v1/models (the first page; and every page, walked with `after`), the /v2 model metadata
  and /readyz, cold (first call of a worker) and warm (median of repeats);
- the largest request the work limit lets through on the 16-unit active version and on the
  256-unit version (through /v2/models/rnnadd/versions/<v>/infer, as an admin), and its time.

Works against older checkouts too (a listing that ignores `limit` is one big page), so the same
script measures before and after.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info

from service.app import create_app
from tests.servers import seed_models
from training.store import ModelStore

TOKEN = secrets.token_urlsafe(16)
BITS = 1024  # 2,500 pairs of 1,024 bits: the whole default work limit in one request


def copy_versions(root: Path, count: int) -> None:
    """Copies of the active version under fresh ids (same weights), as years of retrains."""
    store = ModelStore(root)
    source = root / store.current()
    record = json.loads((source / "model.json").read_text())
    for i in range(count):
        version = f"2020{i // 86400 % 12 + 1:02d}01T{i // 3600 % 24:02d}{i // 60 % 60:02d}" \
                  f"{i % 60:02d}Z-{i:06x}"
        target = root / version
        target.mkdir()
        shutil.copyfile(source / "weights.npz", target / "weights.npz")
        (target / "model.json").write_text(json.dumps({**record, "version": version}))


def wide_version(root: Path, hidden: int) -> str:
    """A stored version of `hidden` units (random weights; its gate result is recorded)."""
    rng = np.random.default_rng(0)
    params = {"w_i": rng.normal(size=(hidden, 2)), "w_h": rng.normal(size=(hidden, hidden)),
              "w_o": rng.normal(size=(1, hidden))}
    gate = {"passed": False, "max_bits": 4096, "failed": "exhaustive_8bit", "checks": []}
    fields = {"hyperparameters": {"hidden_size": hidden, "bits": 8}, "seed": 0, "steps": 0,
              "training_seconds": 0.0, "metrics": {}, "history": [], "parent": None,
              "gate": gate}
    return ModelStore(root).save(params, fields)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call, and what it returned."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def listing(client: Any) -> dict[str, float]:
    """Cold and warm times of the listings and the probes."""
    figures: dict[str, float] = {}
    for name, path in (("v1_models_first_page", "/v1/models"),
                       ("v2_metadata", "/v2/models/rnnadd"), ("readyz", "/readyz")):
        cold, response = timed(lambda p=path: client.get(p))
        assert response.status_code == 200, (path, response.status_code)
        warm = statistics.median(timed(lambda p=path: client.get(p))[0] for _ in range(5))
        figures[f"{name}_cold_s"], figures[f"{name}_warm_s"] = cold, warm
        if name == "v1_models_first_page":
            figures["v1_models_first_page_bytes"] = len(response.get_data())

    def walk() -> int:
        pages, after = 0, None
        while True:
            query = {"limit": 1000} if after is None else {"limit": 1000, "after": after}
            body = client.get("/v1/models", query_string=query).get_json()
            pages += 1
            after = body.get("next_after")
            if not after:
                return pages

    figures["v1_models_all_pages_s"], pages = timed(walk)
    figures["v1_models_pages"] = pages
    return figures


def largest_request(client: Any, version: str | None, max_work: int) -> dict[str, Any]:
    """The most pairs at 1,024 bits the service accepts for a version, and how long they take."""
    path = "/v2/models/rnnadd/infer" if version is None else \
        f"/v2/models/rnnadd/versions/{version}/infer"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def post(n: int) -> tuple[float, Any]:
        body = {"inputs": [{"name": k, "shape": [n], "datatype": "INT64", "data": [x] * n}
                           for k, x in (("a", 3), ("b", 5))],
                "parameters": {"bits": BITS}, "outputs": [{"name": "correct"}]}
        return timed(lambda: client.post(path, json=body, headers=headers))

    high = min(max_work // BITS, client.application.config["MAX_BATCH"])
    seconds, response = post(high)  # at today's limit: taken, or refused before any work
    if response.status_code == 200:
        return {"pairs_at_1024_bits": high, "seconds": seconds}
    low, high = 1, high - 1
    while low < high:  # refused probes cost nothing; taken ones at most what the limit allows
        mid = (low + high + 1) // 2
        low, high = (mid, high) if post(mid)[1].status_code == 200 else (low, mid - 1)
    seconds, response = post(low)
    assert response.status_code == 200, response.get_data()[:200]
    return {"pairs_at_1024_bits": low, "seconds": seconds}


def main() -> None:
    """Build the directory, measure, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        seed_models(root)
        copy_versions(root, args.versions)
        wide = wide_version(root, args.hidden)
        app = create_app({"MODEL_DIR": str(root), "ADMIN_TOKEN": TOKEN, "ACCESS_LOG": False})
        client = app.test_client()
        max_work = app.config["MAX_WORK"]
        out: dict[str, Any] = {"versions": args.versions + 2, "max_work": max_work}
        out.update(listing(client))
        out["active_16_units"] = largest_request(client, None, max_work)
        out[f"stored_{args.hidden}_units"] = largest_request(client, wide, max_work)
        out["threadpools"] = [{k: i.get(k) for k in ("internal_api", "num_threads", "version")}
                              for i in threadpool_info()]
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
