"""A run on a 2-node ``ray.cluster_utils.Cluster`` (two raylets on this machine): workers
spread over both nodes, the two actors pinned to different nodes, the run completes.

Slow (a second Ray cluster, ~1 min): ``pytest -m slow tests/test_distributed_cluster.py``.
It shuts the session's local Ray down first and starts it again afterwards, so tests that
run after it still find one.
"""
from __future__ import annotations

import pytest

from test_distributed import small_cfg


@pytest.mark.slow
def test_two_node_cluster_run_spreads_workers_and_actors(tmp_path):
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from conftest import start_local_ray
    from hamr_dist.distributed.trainer import train_distributed

    had_ray = ray.is_initialized()
    if had_ray:
        ray.shutdown()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        assert len(nodes) == 2

        def pin(node):
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}

        res = train_distributed(small_cfg(tmp_path, num_workers=2, num_train_epochs=2),
                                placement_strategy="SPREAD",
                                actor_options={"hardness": pin(nodes[0]),
                                               "neighbour": pin(nodes[1])})
        m = res.metrics
        worker_nodes = {w["node_id"] for w in m["ray"]["workers"]}
        assert worker_nodes == set(nodes)                          # one worker per node
        assert m["ray"]["hardness_actor"]["node_id"] == nodes[0]
        assert m["ray"]["neighbour_actor"]["node_id"] == nodes[1]
        assert m["ray"]["neighbour_actor"]["refreshes"] == 1        # epoch 2 of 2
        assert 0.0 <= m["test"]["macro_f1"] <= 1.0
        assert (tmp_path / "out" / "metrics.json").is_file()
    finally:
        ray.shutdown()
        cluster.shutdown()
        if had_ray:
            start_local_ray()
