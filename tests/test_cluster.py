"""A real multi-node Ray cluster on loopback: extraction actors land on the node with the (simulated) GPUs."""

import json

import pyarrow.parquet as pq

from xlp.orchestrator.driver import launch
from xlp.spec import load_spec
from conftest import write_spec


def test_extractors_are_placed_on_the_gpu_node(tmp_path, tiny_series):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0})
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=2)
    try:
        ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
        cluster.wait_for_nodes()
        spec = load_spec(write_spec(
            tmp_path / "c.yaml", name="c", output=str(tmp_path / "run"),
            checkpoints=[{"path": f"{tiny_series}/step_*"}],
            data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en", "vi"],
                  "max_train_sentences": 30, "max_test_sentences": 20},
            tasks=["pos"], layers=[1, 2],
            cluster={"extractors": 2, "gpus_per_extractor": 1, "cpus_per_extractor": 0.5}))
        res = launch(spec, quiet=True)
        assert not res.failed and res.extracted == 3 * 4
        records = [json.loads(p.read_text()) for p in (tmp_path / "run/ledger/extract").rglob("*.json")]
        assert {r["ray_node"] for r in records} == {gpu_node.node_id}
        probes = pq.read_table(tmp_path / "run/results/probes.parquet").to_pandas()
        assert len(probes) == 3 * 2 * 2 * 2  # steps x layers x sources x targets (one seed)
    finally:
        ray.shutdown()
        cluster.shutdown()
