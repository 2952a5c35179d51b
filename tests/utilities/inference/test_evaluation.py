"""utilities/inference/evaluation.py and evaluate.py: metrics of known predictions, pooling, TP/FP/FN maps, GeoTIFF
georeferencing, padding of sizes the model cannot take, and the command line."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from mxnet import gluon
from rasterio._err import CPLE_AppDefinedError

import evaluate as evaluate_cli
from tests.utilities.fakes import DEFAULT_TRANSFORM, write_geotiff, write_levircd_tree, write_png
from tests.utilities.tiny_models import save_checkpoint, tiny_network
from utilities.artifacts.model_io import Predictor, load_predictor
from utilities.atomic import WriteError, atomic_files
from utilities.data.datasets import levircd_samples, pair_samples
from utilities.errors import InputError
from utilities.inference import evaluation, tiled
from utilities.inference.evaluation import TPFPFN_COLOURS, evaluate, evaluate_prediction, tpfpfn_map, write_evaluation
from utilities.inference.metrics import change_metrics, confusion_counts
from utilities.inference.tiled import predict_rasters, tiled_prediction

ROOT = Path(__file__).resolve().parents[3]
H, W = 12, 20  # not multiples of the fake model's size_multiple (8)


class ChangeWhereBrighter(gluon.HybridBlock):
    """A fake model with a known output: change probability = clip(date2 - date1, 0, 1) of band 1.

    It only accepts heights and widths divisible by 8 (the reshape fails otherwise), like a real mantis
    model, so that evaluating 12 x 20 images proves they were padded.
    """

    size_multiple = 8

    def hybrid_forward(self, F, date1, date2):
        p = F.clip(F.slice_axis(date2 - date1, axis=1, begin=0, end=1), 0, 1)
        p = p.reshape((0, 0, -4, -1, 8, -4, -1, 8)).reshape((0, 0, -3, -3))
        return F.concat(1 - p, p, dim=1), p, p


def fake_predictor() -> Predictor:
    net = ChangeWhereBrighter()
    net.initialize()
    return Predictor([net], mean=[0, 0, 0], std=[255, 255, 255])


def box(r0, r1, c0, c1, shape=(H, W)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def write_sample(folder: Path, name: str, pred: np.ndarray, label: np.ndarray) -> None:
    """A LEVIR-CD-like tile whose fake prediction is ``pred``: date 2 is brighter exactly there."""
    date1 = np.full((3,) + pred.shape, 40, np.uint8)
    date2 = date1 + (pred * 215).astype(np.uint8)[None]
    write_png(folder / "A" / f"{name}.png", date1)
    write_png(folder / "B" / f"{name}.png", date2)
    write_png(folder / "label" / f"{name}.png", label * np.uint8(255))


#: overlapping 6 x 10 boxes: TP 4 x 6 = 24, FP 36, FN 36, TN 240 - 96 = 144
PRED, LABEL = box(0, 6, 0, 10), box(2, 8, 4, 14)
EXPECTED = {"precision": 0.4, "recall": 0.4, "f1": 0.4, "iou": 0.25, "overall_accuracy": 0.7,
            "mcc": (24 * 144 - 36 * 36) / np.sqrt(60 * 60 * 180 * 180),  # 0.2
            "kappa": (0.7 - 0.625) / (1 - 0.625)}  # chance agreement 0.25^2 + 0.75^2


@pytest.fixture
def tiles(tmp_path):
    write_sample(tmp_path, "known", PRED, LABEL)
    write_sample(tmp_path, "perfect", box(9, 12, 15, 20), box(9, 12, 15, 20))
    return tmp_path


def test_metrics_of_a_known_prediction_match_the_hand_computed_confusion_matrix(tiles):
    samples = [s for s in levircd_samples(tiles) if s.name == "known"]
    result = evaluate(fake_predictor(), samples)
    assert result.images[0].counts.tolist() == [24, 36, 36, 144]
    for name, value in EXPECTED.items():
        assert result.metrics[name] == pytest.approx(value), name


def test_global_metrics_pool_the_counts_instead_of_averaging_images(tiles):
    result = evaluate(fake_predictor(), levircd_samples(tiles))
    known, perfect = result.images
    assert perfect.counts.tolist() == [15, 0, 0, 225] and perfect.metrics["mcc"] == pytest.approx(1.0)
    assert result.counts.tolist() == [39, 36, 36, 369]
    assert result.metrics == pytest.approx(change_metrics([39, 36, 36, 369]))
    mean_of_images = (known.metrics["mcc"] + perfect.metrics["mcc"]) / 2
    assert result.metrics["mcc"] != pytest.approx(mean_of_images, abs=1e-3)


def test_padding_keeps_every_pixel_of_sizes_the_model_cannot_take(tiles):
    """12 x 20 is predicted through a 16 x 24 reflect-padded input and cropped back: the fake model
    rejects other sizes, and the prediction at the image's last rows/columns is exact."""
    result = evaluate(fake_predictor(), levircd_samples(tiles), maps_dir=tiles / "maps")
    assert sum(result.images[1].counts) == H * W
    image = cv2.imread(str(tiles / "maps" / "perfect_tpfpfn.png"))
    assert image.shape == (H, W, 3)
    assert (image[9:, 15:] == 255).all() and (image[:9] == 0).all()


def test_map_colours_at_known_pixels(tiles):
    evaluate(fake_predictor(), levircd_samples(tiles), maps_dir=tiles / "maps")
    bgr = cv2.imread(str(tiles / "maps" / "known_tpfpfn.png"))
    expected = {(0, 0): "fp", (3, 5): "tp", (7, 12): "fn", (11, 19): "tn"}
    for (row, col), outcome in expected.items():
        assert tuple(bgr[row, col, ::-1]) == TPFPFN_COLOURS[outcome], (row, col, outcome)
    assert TPFPFN_COLOURS["tp"] == (255, 255, 255) and TPFPFN_COLOURS["fp"] == (255, 0, 0)
    assert TPFPFN_COLOURS["fn"] == (0, 0, 255) and TPFPFN_COLOURS["tn"] == (0, 0, 0)
    assert not (tiles / "maps" / "known_tpfpfn.tif").exists()  # PNG inputs carry no georeferencing


def test_pixels_without_data_are_left_out_and_grey():
    valid = np.ones((H, W), bool)
    valid[0, 0] = False
    image = tpfpfn_map(PRED, LABEL, valid)
    assert tuple(image[0, 0]) == TPFPFN_COLOURS["nodata"] and tuple(image[3, 5]) == TPFPFN_COLOURS["tp"]


def test_geotiff_map_has_the_inputs_crs_and_transform(tmp_path):
    date1 = np.full((3, H, W), 40, np.uint8)
    date2 = date1 + (PRED * 215).astype(np.uint8)[None]
    paths = [write_geotiff(tmp_path / f"{n}.tif", image) for n, image in (("t1", date1), ("t2", date2))]
    label = write_geotiff(tmp_path / "label.tif", LABEL[None] * np.uint8(255))
    result = evaluate(fake_predictor(), pair_samples(*paths, label), maps_dir=tmp_path / "maps")
    assert result.counts.tolist() == [24, 36, 36, 144]
    with rasterio.open(tmp_path / "maps" / "t1_tpfpfn.tif") as src:
        assert src.crs.to_string() == "EPSG:32633" and src.transform == DEFAULT_TRANSFORM
        assert (src.count, src.height, src.width) == (3, H, W)
        rgb = src.read().transpose(1, 2, 0)
    np.testing.assert_array_equal(rgb, tpfpfn_map(PRED, LABEL))


def test_nodata_pixels_are_left_out_of_the_counts(tmp_path):
    date1 = np.full((3, H, W), 40, np.uint8)
    date2 = date1 + (PRED * 215).astype(np.uint8)[None]
    date1[:, 0, 0] = 7  # a false positive pixel of PRED, declared without data
    paths = [write_geotiff(tmp_path / f"{n}.tif", image, nodata=7) for n, image in (("t1", date1), ("t2", date2))]
    label = write_geotiff(tmp_path / "label.tif", LABEL[None] * np.uint8(255))
    result = evaluate(fake_predictor(), pair_samples(*paths, label), maps_dir=tmp_path)
    assert result.counts.tolist() == [24, 35, 36, 144]
    with rasterio.open(tmp_path / "t1_tpfpfn.tif") as src:
        assert tuple(src.read()[:, 0, 0]) == TPFPFN_COLOURS["nodata"]


def tall_pair(folder: Path, height: int = 200, width: int = 24, dtype=np.float32):
    """A georeferenced pair much taller than a strip, its fake prediction ``pred`` and its label."""
    rng = np.random.default_rng(3)
    pred = (rng.random((height, width)) < 0.3).astype(np.uint8)
    label = (rng.random((height, width)) < 0.3).astype(np.uint8)
    date1 = np.full((3, height, width), 40, dtype)
    date2 = date1 + (pred * 215).astype(dtype)[None]
    paths = [write_geotiff(folder / f"{n}.tif", image) for n, image in (("t1", date1), ("t2", date2))]
    return paths, write_geotiff(folder / "label.tif", label[None] * np.uint8(255)), pred, label


def test_evaluation_streams_by_windows_and_equals_the_whole_image_computation(tmp_path, monkeypatch):
    """Rasters (dates and label) are read in spans of at most a window of rows, never whole, and the counts
    and maps equal the computation on the whole arrays in memory."""
    (date1, date2), label_path, pred, label = tall_pair(tmp_path)
    spans = []

    def spy(read):
        def recording(path, *args, window=None, **kwargs):
            spans.append((Path(path).name, window))
            return read(path, *args, window=window, **kwargs)
        return recording

    monkeypatch.setattr(tiled, "read_image", spy(tiled.read_image))
    monkeypatch.setattr(evaluation, "read_label", spy(evaluation.read_label))
    window, stride = 16, 8
    result = evaluate(fake_predictor(), pair_samples(date1, date2, label_path), maps_dir=tmp_path / "maps",
                      predict=tiled_prediction(window, stride, batch_size=2))
    assert {name for name, _ in spans} == {"t1.tif", "t2.tif", "label.tif"}
    assert all(w is not None and w[2] <= window and w[3] in (1, 24) for _, w in spans)
    assert max(w[0] + w[2] for _, w in spans) == 200  # down to the last row
    np.testing.assert_array_equal(result.counts, confusion_counts(pred, label))
    whole = evaluate(fake_predictor(), pair_samples(date1, date2, label_path))  # one pass over the whole image
    np.testing.assert_array_equal(result.counts, whole.counts)
    assert result.metrics == pytest.approx(change_metrics(confusion_counts(pred, label)), nan_ok=True)
    expected = tpfpfn_map(pred, label)
    with rasterio.open(tmp_path / "maps" / "t1_tpfpfn.tif") as src:
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), expected)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "maps" / "t1_tpfpfn.png"))[:, :, ::-1], expected)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["t1_tpfpfn.png", "t1_tpfpfn.tif"]


def test_a_failure_half_way_leaves_no_map(tmp_path):
    (date1, date2), label_path, _, _ = tall_pair(tmp_path)
    seen = []

    def fail_on_third_strip(item):
        seen.append(item.row)
        if len(seen) == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        evaluate(fake_predictor(), pair_samples(date1, date2, label_path), maps_dir=tmp_path / "maps",
                 predict=tiled_prediction(16, 8, batch_size=2), observe=fail_on_third_strip)
    assert list((tmp_path / "maps").iterdir()) == []  # neither final names nor temporary files


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_pixels_are_nodata_and_left_out(tmp_path, value):
    (date1, date2), label_path, pred, label = tall_pair(tmp_path, height=40)
    with rasterio.open(date2, "r+") as dst:
        image = dst.read()
        image[1, :20] = value  # the top half of one band
        dst.write(image)
    result = evaluate(fake_predictor(), pair_samples(date1, date2, label_path),
                      predict=tiled_prediction(16, 8, batch_size=2))
    np.testing.assert_array_equal(result.counts, confusion_counts(pred[20:], label[20:]))


def test_a_pair_without_any_valid_pixel_warns(tmp_path, caplog):
    image = np.full((3, H, W), np.nan, np.float32)
    paths = [write_geotiff(tmp_path / f"{n}.tif", image) for n in ("t1", "t2")]
    label = write_geotiff(tmp_path / "label.tif", LABEL[None] * np.uint8(255))
    with caplog.at_level("WARNING"):
        result = evaluate(fake_predictor(), pair_samples(*paths, label))
    assert result.counts.tolist() == [0, 0, 0, 0]
    assert [r.getMessage() for r in caplog.records] == [
        f"sample t1 ({paths[0]}, {paths[1]}) has no pixel with data in both dates: its metrics are undefined"]


def test_reports_are_written_with_a_global_row_and_one_row_per_image(tiles):
    result = evaluate(fake_predictor(), levircd_samples(tiles))
    json_path, md_path = write_evaluation(result, tiles / "out", {"model": "fake"})
    report = json.loads(json_path.read_text())
    assert report["model"] == "fake" and report["global"]["tp"] == 39
    assert [r["name"] for r in report["images"]] == ["known", "perfect"]
    assert report["images"][0]["mcc"] == pytest.approx(0.2)
    lines = md_path.read_text().splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("|  | precision | recall | F1 | MCC | IoU | OA | kappa | TP | FP | FN | TN")
    assert table[1].startswith("| **all images (pooled counts)** |") and table[2].startswith("| known | 0.4000")
    assert not list((tiles / "out").glob(".*tmp*"))  # atomic writes leave no temporary file


def test_unlabelled_or_mismatched_bands_are_input_errors(tiles):
    sample = levircd_samples(tiles)[0]
    sample.label = None
    with pytest.raises(InputError, match="has no label"):
        evaluate(fake_predictor(), [sample])
    two_bands = Predictor([ChangeWhereBrighter()], mean=[0, 0], std=[1, 1])
    with pytest.raises(InputError, match="takes 2 band"):
        evaluate(two_bands, levircd_samples(tiles))


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_command_line(tmp_path):
    """A real tiny model on a fake LEVIR-CD test split of 20 x 20 tiles (padded to 24 x 24)."""
    data = write_levircd_tree(tmp_path / "levir", splits=("test",), n=2, size=20)
    params = save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    out = tmp_path / "eval"
    result = run("evaluate.py", "--model", str(params), "--levircd", str(data), "--out", str(out), "--window", "32",
                 "--stride", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "metrics.json").read_text())
    assert sum(report["global"][k] for k in ("tp", "fp", "fn", "tn")) == 2 * 20 * 20
    assert len(report["images"]) == 2 and (out / "metrics.md").exists()
    assert sorted(p.name for p in out.glob("*_tpfpfn.png")) == ["test_1_tpfpfn.png", "test_2_tpfpfn.png"]


def test_command_line_errors_are_one_line(tmp_path, capsys):
    data = write_levircd_tree(tmp_path / "levir", splits=("test",), n=1, size=16)
    missing = tmp_path / "nope.params"
    assert evaluate_cli.main(["--model", str(missing), "--levircd", str(data), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: checkpoint {missing} does not exist"]
    assert evaluate_cli.main(["--model", str(missing), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: give either --levircd ROOT or --date1, --date2 and --label")
    assert evaluate_cli.main(["--model", str(missing), "--date1", "a.tif", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: a pair needs all of --date1, --date2 and --label\n"


def test_threshold_outside_0_1_is_an_input_error(tiles):
    with pytest.raises(InputError, match="threshold"):
        evaluate(fake_predictor(), levircd_samples(tiles), threshold=1.5)


def test_a_pixel_exactly_at_the_threshold_is_change_in_the_mask_and_in_the_evaluation(tmp_path):
    """predict.py's change mask and the evaluation both mark change where the probability is at least the
    threshold: with the threshold equal to the probability of a quarter of the pixels, those count as change."""
    date1 = np.full((3, 16, 16), 40, np.uint8)
    date2 = date1.copy()
    date2[:, :, 8:] += 51
    date2[:, 8:, :] += 51  # change probabilities 0, 0.2, 0.2 and 0.4 by quarter
    paths = [write_geotiff(tmp_path / f"{n}.tif", d) for n, d in (("t1", date1), ("t2", date2))]
    label = write_geotiff(tmp_path / "label.tif", np.full((1, 16, 16), 255, np.uint8))
    probability = rasterio.open(predict_rasters(fake_predictor(), *paths, tmp_path / "first", window=16, stride=16,
                                                quicklook=False, progress=False,
                                                probability_dtype="float32")["probability"]).read(1)
    threshold = float(probability[0, 8])  # exactly the probability of the two 0.2 quarters
    outputs = predict_rasters(fake_predictor(), *paths, tmp_path / "pred", window=16, stride=16, threshold=threshold,
                              quicklook=False, progress=False, probability_dtype="float32")
    mask = rasterio.open(outputs["mask"]).read(1)
    np.testing.assert_array_equal(mask, (probability >= threshold).astype(np.uint8))
    assert mask.sum() == 3 * 64 and mask[0, 8] == 1
    scored = evaluate_prediction(outputs["probability"], label, threshold)
    np.testing.assert_array_equal(scored.counts, [3 * 64, 0, 64, 0])  # tp, fp, fn, tn


def test_fake_model_is_pixelwise():
    """Guard for the tests above: the fake model's change output is date2 - date1 of band 1, clipped."""
    a, b = mx.nd.zeros((1, 3, 8, 8)), mx.nd.ones((1, 3, 8, 8)) * 0.25
    segm, _, _ = ChangeWhereBrighter()(a, b)
    np.testing.assert_allclose(segm.asnumpy()[0, 1], 0.25)


def write_probability(path: Path, probability: np.ndarray, **kwargs) -> Path:
    return write_geotiff(path, probability[None].astype(np.float32), **kwargs)


def test_a_written_prediction_scores_as_the_model_that_wrote_it(tmp_path):
    """predict.py's change_probability.tif, scored without the model, gives the model path's counts and
    maps on the same pair and windows; the dates' nodata pixels (NaN in the file) are left out of both."""
    rng = np.random.default_rng(5)
    date1, date2 = (rng.integers(1, 255, (3, 40, 56), dtype=np.uint8) for _ in range(2))
    date1[:, :3, :5] = 0
    paths = [write_geotiff(tmp_path / f"{n}.tif", d, nodata=0) for n, d in (("t1", date1), ("t2", date2))]
    label = write_geotiff(tmp_path / "label.tif", (rng.random((1, 40, 56)) < 0.3).astype(np.uint8) * 255)
    predictor = load_predictor(save_checkpoint(tmp_path / "run", tiny_network(), epoch=1))
    outputs = predict_rasters(predictor, *paths, tmp_path / "pred", window=32, stride=16, batch_size=2,
                              quicklook=False, progress=False, probability_dtype="float32")
    threshold = float(np.nanmedian(rasterio.open(outputs["probability"]).read(1)))  # both classes predicted
    model = evaluate(predictor, pair_samples(*paths, label), threshold, maps_dir=tmp_path / "model_maps",
                     predict=tiled_prediction(32, 16, batch_size=2))
    scored = evaluate_prediction(outputs["probability"], label, threshold, maps_dir=tmp_path / "maps")
    assert model.counts.sum() == 40 * 56 - 15 and model.counts[0] > 0 and model.counts[1] > 0
    np.testing.assert_array_equal(scored.counts, model.counts)
    assert scored.metrics == pytest.approx(model.metrics, nan_ok=True)
    with rasterio.open(tmp_path / "maps" / "change_probability_tpfpfn.tif") as src, \
            rasterio.open(tmp_path / "model_maps" / "t1_tpfpfn.tif") as expected:
        assert src.crs == expected.crs and src.transform == expected.transform
        np.testing.assert_array_equal(src.read(), expected.read())


def test_prediction_nodata_is_left_out_and_read_by_strips(tmp_path, monkeypatch):
    probability = PRED.astype(np.float32)
    probability[0, 0] = -1  # a false positive pixel of PRED, declared without data
    probability[11, 19] = np.nan  # a true negative
    prediction = write_probability(tmp_path / "p.tif", probability, nodata=-1)
    label = write_geotiff(tmp_path / "label.tif", LABEL[None] * np.uint8(255))
    monkeypatch.setattr(evaluation, "STRIP_ROWS", 5)
    spans = []
    read = tiled.read_image
    monkeypatch.setattr(tiled, "read_image", lambda path, *a, window=None, **k: (
        spans.append(window), read(path, *a, window=window, **k))[1])
    result = evaluate_prediction(prediction, label)
    assert result.counts.tolist() == [24, 35, 36, 143]
    assert [w for w in spans if w[2] > 1] == [(0, 0, 5, W), (5, 0, 5, W), (10, 0, 2, W)]


def test_command_line_scores_a_prediction(tmp_path, capsys):
    prediction = write_probability(tmp_path / "change_probability.tif", PRED * 0.9)
    label = write_geotiff(tmp_path / "label.tif", LABEL[None] * np.uint8(255))
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--prediction", str(prediction), "--label", str(label), "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["prediction"] == str(prediction) and "model" not in report
    assert [report["global"][k] for k in ("tp", "fp", "fn", "tn")] == [24, 36, 36, 144]
    assert report["global"]["mcc"] == pytest.approx(EXPECTED["mcc"])
    assert sorted(p.name for p in out.iterdir()) == ["change_probability_tpfpfn.png", "change_probability_tpfpfn.tif",
                                                     "metrics.json", "metrics.md"]
    assert capsys.readouterr().out.startswith("1 image(s): precision 0.4000")


def test_command_line_prediction_errors_are_one_line(tmp_path, capsys):
    prediction = write_probability(tmp_path / "p.tif", PRED * 0.9)
    label = write_geotiff(tmp_path / "label.tif", LABEL[None] * np.uint8(255))
    wide = write_geotiff(tmp_path / "wide.tif", np.zeros((1, H, W + 1), np.uint8))
    other_crs = write_geotiff(tmp_path / "crs.tif", LABEL[None] * np.uint8(255), crs="EPSG:4326")
    two_bands = write_geotiff(tmp_path / "two.tif", np.zeros((2, H, W), np.float32))
    out = ["--out", str(tmp_path / "eval")]
    cases = {
        ("--prediction", prediction, "--label", wide):
            f"prediction and label differ in size: {prediction} is {H}x{W} (rows x cols) but {wide} is {H}x{W + 1}.",
        ("--prediction", prediction, "--label", other_crs):
            f"prediction and label differ in CRS: {prediction} has EPSG:32633 but {other_crs} has EPSG:4326.",
        ("--prediction", two_bands, "--label", label):
            f"prediction {two_bands} has 2 bands: expected one, the change probability (change_probability.tif "
            "of predict.py)",
        ("--prediction", prediction, "--model", "m.params", "--label", label):
            "give either --model (to predict and score) or --prediction (to score a prediction already made), "
            "not both",
        ("--label", label):
            "give either --model (to predict and score) or --prediction (to score a prediction already made), "
            "not both",
        ("--prediction", prediction):
            "--prediction needs the --label to score it against",
        ("--prediction", prediction, "--label", label, "--date1", "a.tif"):
            "--prediction is scored against --label alone: --levircd, --date1 and --date2 go with --model",
    }
    for args, message in cases.items():
        assert evaluate_cli.main([*map(str, args), *out]) == 2
        assert capsys.readouterr().err.splitlines() == [f"error: {message}"]
    assert not (tmp_path / "eval").exists()


# --------------------------------------------------------------------------------- failed writes of the maps


class NoSpace:
    """What ``os.statvfs`` tells of a full device."""
    f_bavail, f_frsize = 0, 4096


@pytest.mark.parametrize("space", ["full", "left"])
def test_a_gdal_error_copying_a_map_names_it_and_no_output_of_the_command_appears(tiles, monkeypatch, space):
    """GDAL's own errors (not rasterio's) from the PNG copy of the second image's map: one write error naming
    that PNG ("no space left" when the device is full), and neither the first image's maps nor any temporary
    file appears; a previous run's metrics stay as they were."""
    out = tiles / "out"
    out.mkdir()
    (out / "metrics.json").write_text("the previous run's")
    copy, copied = rasterio.shutil.copy, []

    def fail_on_second(source, destination, **kwargs):
        copied.append(destination)
        if len(copied) == 2:
            raise CPLE_AppDefinedError(3, 1, "TIFFReadDirectory:Failed to read directory at offset 10472")
        return copy(source, destination, **kwargs)

    monkeypatch.setattr(rasterio.shutil, "copy", fail_on_second)
    if space == "full":
        monkeypatch.setattr(os, "statvfs", lambda path: NoSpace())
    with pytest.raises(WriteError) as err, atomic_files() as files:
        result = evaluate(fake_predictor(), levircd_samples(tiles), maps_dir=out, files=files)
        write_evaluation(result, out, {"model": "fake"}, files)
    png = out / "perfect_tpfpfn.png"
    assert (err.value.errno, err.value.strerror) == {
        "full": (errno.ENOSPC, f"no space left on device writing {png}"),
        "left": (errno.EIO, f"cannot write {png}: TIFFReadDirectory:Failed to read directory at offset 10472")}[space]
    assert [p.name for p in out.iterdir()] == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "the previous run's"


def test_a_geotiff_map_gdal_could_not_finish_is_the_file_named(tmp_path, monkeypatch):
    """GDAL reports no error when it cannot finish a GeoTIFF as it closes it (a full disk): the PNG copy then
    fails reading it, and the GeoTIFF, not the PNG, is named. Here the GeoTIFF is cut short before the copy."""
    (date1, date2), label_path, _, _ = tall_pair(tmp_path)
    copy = rasterio.shutil.copy

    def cut_short_then_copy(source, destination, **kwargs):
        os.truncate(source, os.path.getsize(source) // 2)
        return copy(source, destination, **kwargs)

    monkeypatch.setattr(rasterio.shutil, "copy", cut_short_then_copy)
    with pytest.raises(WriteError) as err:
        evaluate(fake_predictor(), pair_samples(date1, date2, label_path), maps_dir=tmp_path / "maps")
    assert err.value.strerror == (f"cannot write {tmp_path / 'maps' / 't1_tpfpfn.tif'}: GDAL could not complete it "
                                  f"(it does not read back)")
    assert list((tmp_path / "maps").iterdir()) == []


def test_the_metrics_appear_together_the_json_last(tiles, monkeypatch):
    result = evaluate(fake_predictor(), levircd_samples(tiles))
    renamed, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(dst).name), replace(src, dst)))
    write_evaluation(result, tiles / "out", {"model": "fake"})
    assert renamed == ["metrics.md", "metrics.json"]

