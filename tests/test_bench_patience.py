"""benchmarks.patience replays early stopping from full dev histories, as the training loop
stops (tests/test_training covers the loop itself)."""
from __future__ import annotations

import json

import pytest

from benchmarks import patience


@pytest.mark.parametrize("devs,p,kept", [
    ([0.1, 0.3, 0.2, 0.2, 0.5], 2, (2, 0.3)),        # two epochs without a gain: stop at 4
    ([0.1, 0.3, 0.2, 0.4, 0.5], 2, (5, 0.5)),        # a gain within the patience goes on
    ([0.1, 0.3, 0.3, 0.3, 0.5], 2, (2, 0.3)),        # a tie is no gain
    ([0.1, 0.3, 0.2, 0.2, 0.5], 3, (5, 0.5)),
    ([0.1, 0.3, 0.2, 0.2, 0.1], None, (2, 0.3)),
])
def test_replay_keeps_the_epoch_the_loop_keeps(devs, p, kept):
    assert patience.replay(devs, p) == kept


def _doc(tmp_path, name, patience_=None):
    runs = [{"status": "ok", "dataset": "d", "method": "m", "seed": s,
             "history": [{"dev_macro_f1": v} for v in devs]}
            for s, devs in enumerate([[0.1, 0.3, 0.2, 0.2, 0.5], [0.2, 0.4, 0.5, 0.6, 0.7]], 1)]
    runs.append({"status": "failed", "dataset": "d", "method": "m", "seed": 3})
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"budget": {"early_stopping_patience": patience_}, "runs": runs}))
    return path


def test_table_means_losses_and_stops(tmp_path):
    [row] = patience.rows(patience.full_runs([_doc(tmp_path, "a")]), [2])
    # full bests 0.5 and 0.7; patience 2 keeps 0.3 (stopped at epoch 4 of 5) and 0.7
    assert row == ["d", "m", 2, "60.0", "50.0", "-10.00", "1/2"]


def test_files_with_early_stopping_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        patience.main([str(_doc(tmp_path, "b", patience_=2))])
    assert e.value.code == 2 and "used early stopping" in capsys.readouterr().err
