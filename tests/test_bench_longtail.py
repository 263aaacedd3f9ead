"""benchmarks/longtail.py: @lt copies cut training only, @nlt copies cut every split alike."""
import json
from collections import Counter

import pytest

from benchmarks.longtail import class_sizes, make_long_tail, parse


def _write(folder, counts_per_split):
    folder.mkdir()
    for split, counts in counts_per_split.items():
        rows = [{"text": f"{split} {k} {i}", "label": k} for k, n in enumerate(counts)
                for i in range(n)]
        (folder / f"{split}.json").write_text(json.dumps(rows))


def _counts(folder, split):
    c = Counter(r["label"] for r in json.loads((folder / f"{split}.json").read_text()))
    return [c[k] for k in sorted(c)]


def test_parse_names_the_kind():
    assert parse("sst5@lt100") == ("sst5", 100.0, False)
    assert parse("sst5@nlt20") == ("sst5", 20.0, True)
    assert parse("sst5") is None


@pytest.mark.parametrize("natural", [False, True])
def test_copies_cut_training_and_for_nlt_the_evaluation_splits(tmp_path, natural):
    src = tmp_path / "src"
    _write(src, {"train": [400, 200, 100], "dev": [40, 20, 10], "test": [80, 40, 20]})
    out = make_long_tail(str(src), 16.0, root=tmp_path / "lt", natural=natural)
    assert _counts(out, "train") == class_sizes([400, 200, 100], 16.0) == [400, 100, 25]
    if natural:      # each class keeps its training fraction: 1, 1/2, 1/4
        assert _counts(out, "dev") == [40, 10, 2] and _counts(out, "test") == [80, 20, 5]
    else:
        assert _counts(out, "dev") == [40, 20, 10] and _counts(out, "test") == [80, 40, 20]
