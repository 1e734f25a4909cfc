"""Class weights 1/(n_c + s*N), rescaled to sum to C, and the `rewardseg class-weights` CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rewardseg.class_weights import class_weights, write_class_weights
from rewardseg.cli import main


def test_formula_hand_computed():
    # counts 6, 3, 1 -> N = 10; s = 0.05 -> 1/6.5, 1/3.5, 1/1.5, then scaled to sum 3
    raw = [1 / 6.5, 1 / 3.5, 1 / 1.5]
    expected = [3 * r / sum(raw) for r in raw]
    assert class_weights([6, 3, 1], 0.05) == pytest.approx(expected)
    assert sum(class_weights([6, 3, 1], 0.005)) == pytest.approx(3.0)
    # rarer classes weigh more; more smoothing flattens the weights
    w_small, w_big = class_weights([6, 3, 1], 0.005), class_weights([6, 3, 1], 0.5)
    assert w_small[2] > w_small[1] > w_small[0]
    assert max(w_big) / min(w_big) < max(w_small) / min(w_small)


def test_absent_class_needs_smoothing():
    assert class_weights([5, 0], 0.1)[1] > class_weights([5, 0], 0.1)[0]
    with pytest.raises(ValueError, match="smoothing > 0"):
        class_weights([5, 0], 0.0)
    with pytest.raises(ValueError, match="smoothing"):
        class_weights([5, 1], -1.0)


def _labels(tmp_path, maps):
    root = tmp_path / "gtFine" / "train" / "city"
    root.mkdir(parents=True)
    for i, m in enumerate(maps):
        Image.fromarray(np.asarray(m, dtype=np.uint8)).save(
            root / f"c_{i:06d}_000000_gtFine_labelTrainIds.png")
    return str(tmp_path / "gtFine")


def test_cli_counts_labels_and_writes_json_and_npy(tmp_path, capsys):
    root = _labels(tmp_path, [[[0, 0, 1], [255, 2, 0]], [[0, 1, 1], [0, 0, 255]]])
    out = tmp_path / "w.json"
    assert main(["class-weights", root, "--num-classes", "3", "--smoothing", "0.05",
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert record["counts"] == [6, 3, 1]
    assert record["weights"] == pytest.approx(class_weights([6, 3, 1], 0.05))
    assert np.load(tmp_path / "w.npy").tolist() == pytest.approx(record["weights"], rel=1e-6)
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_cli_shows_a_progress_bar_and_loss_reads_the_file(tmp_path):
    root = _labels(tmp_path, [[[0, 1]], [[1, 1]]])
    out = tmp_path / "cw.json"
    proc = subprocess.run([sys.executable, "-m", "rewardseg", "class-weights", root,
                           "--num-classes", "2", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "counting labels" in proc.stderr and "2/2" in proc.stderr
    from rewardseg.models.losses import RewardLoss

    loss = RewardLoss(loss="weighted_ce", class_weight=str(out))
    assert loss.class_weight.tolist() == pytest.approx(json.loads(out.read_text())["weights"])


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["class-weights", str(tmp_path / "nope"), "--num-classes", "3"]) == 2
    assert "does not exist" in capsys.readouterr().err
    root = _labels(tmp_path, [[[0, 7]]])
    assert main(["class-weights", root, "--num-classes", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "label value 7 outside [0, 3)" in err and "c_000000" in err
    assert not list((tmp_path / "gtFine").glob("class_weights*"))


def test_write_default_location(tmp_path):
    root = _labels(tmp_path, [[[0, 1, 2]]])
    out = write_class_weights(root, 3, 0.005, progress=False)
    assert out == os.path.join(root, "class_weights_s0.005.json")
    assert os.path.isfile(out[:-5] + ".npy")
