"""predict_rasters's output formats (utilities/inference/tiled.py): every map a valid Cloud-Optimized GeoTIFF
(rio-cogeo), the uint8 probabilities equal to the float32 ones quantized, the same mask and the same evaluation
counts from either file, and the change polygons beside them; predict.py's --polygons and --min-area."""
import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from rio_cogeo.cogeo import cog_validate

import predict as predict_cli
from tests.utilities.fakes import write_geotiff, write_geotiff_pair
from tests.utilities.inference.test_polygons import components
from tests.utilities.inference.test_tiled import direct, known_predictor, pair
from tests.utilities.tiny_models import save_checkpoint, tiny_network
from utilities.inference.evaluation import evaluate_prediction
from utilities.inference.tiled import OUTPUT_FILES, predict_rasters
from utilities.raster.cog import quantize, read_scaled

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def both_forms(tmp_path, height=300, width=280, **kwargs):
    """The outputs of one pair in the default (uint8) form and in float32, and the pair's pixels."""
    date1, date2, image1, image2 = pair(tmp_path, height, width)
    options = dict(window=64, stride=32, quicklook=False, progress=False, **kwargs)
    predictor = known_predictor(kernel=3)
    uint8 = predict_rasters(predictor, date1, date2, tmp_path / "uint8", **options)
    float32 = predict_rasters(predictor, date1, date2, tmp_path / "float32", probability_dtype="float32", **options)
    return date1, uint8, float32


def test_every_output_is_a_valid_cog_on_the_inputs_grid(tmp_path):
    date1, uint8, float32 = both_forms(tmp_path)
    with rasterio.open(date1) as src:
        crs, transform = src.crs, src.transform
    for paths, form in ((uint8, "uint8"), (float32, "float32")):
        for name in OUTPUT_FILES:
            valid, errors, warnings = cog_validate(str(paths[name]))
            assert valid and errors == [] and warnings == [], (paths[name], errors, warnings)
            with rasterio.open(paths[name]) as src:
                assert (src.crs, src.transform, src.height, src.width) == (crs, transform, 300, 280)
                assert src.block_shapes == [(256, 256)] and src.overviews(1) == [2]
                assert src.compression.value == "DEFLATE"
                dtype = "uint8" if name == "mask" else form
                assert src.dtypes[0] == dtype
                assert src.nodata == 255 if dtype == "uint8" else np.isnan(src.nodata)
                assert src.scales == ((1 / 254,) if dtype == "uint8" and name != "mask" else (1.0,))
                assert src.descriptions[0].startswith({"probability": "change probability", "mask": "change mask",
                                                       "boundary": "change boundary", "distance": "change distance"}
                                                      [name])
                if name == "mask":  # overviews keep the classes (nearest), never a blend of them
                    assert set(np.unique(src.read(1, out_shape=(150, 140)))) <= {0, 1}


def test_uint8_maps_are_the_float32_maps_quantized_and_the_mask_is_the_same(tmp_path):
    _, uint8, float32 = both_forms(tmp_path)
    for name in ("probability", "boundary", "distance"):
        with rasterio.open(uint8[name]) as small, rasterio.open(float32[name]) as exact:
            np.testing.assert_array_equal(small.read(1), quantize(exact.read(1)), err_msg=name)
    with rasterio.open(uint8["mask"]) as a, rasterio.open(float32["mask"]) as b, \
            rasterio.open(uint8["probability"]) as p:
        mask = a.read(1)
        np.testing.assert_array_equal(mask, b.read(1))
        np.testing.assert_array_equal(mask, p.read(1) >= 127)  # threshold 0.5 = 127/254, exactly
    assert 0.2 < mask.mean() < 0.8


def test_nodata_is_255_in_the_uint8_maps(tmp_path):
    rng = np.random.default_rng(5)
    image1, image2 = (rng.uniform(0, 200, (3, 40, 48)).astype(np.float32) for _ in range(2))
    image1[:, 5:9, 10:20] = np.nan
    date1, date2 = write_geotiff(tmp_path / "a.tif", image1), write_geotiff(tmp_path / "b.tif", image2)
    paths = predict_rasters(known_predictor(), date1, date2, tmp_path / "out", window=16, stride=8, quicklook=False,
                            progress=False)
    nodata = np.zeros((40, 48), bool)
    nodata[5:9, 10:20] = True
    for name in OUTPUT_FILES:
        with rasterio.open(paths[name]) as src:
            np.testing.assert_array_equal(src.read(1) == 255, nodata, err_msg=name)
    probability = read_scaled(paths["probability"])  # p = v / 254, NaN without data
    np.testing.assert_array_equal(np.isnan(probability), nodata)
    expected = direct(known_predictor(), np.nan_to_num(image1, nan=100.0), image2)[0]
    assert np.abs(probability - expected)[~nodata].max() <= 1 / 254


def test_the_uint8_file_scores_as_the_float32_file_at_threshold_one_half(tmp_path):
    date1, uint8, float32 = both_forms(tmp_path)
    label = write_geotiff(tmp_path / "label.tif", (np.random.default_rng(3).random((1, 300, 280)) < 0.4)
                          .astype(np.uint8) * 255)
    small, exact = (evaluate_prediction(paths["probability"], label, 0.5) for paths in (uint8, float32))
    np.testing.assert_array_equal(small.counts, exact.counts)
    assert small.counts[0] > 0 and small.counts[1] > 0


def test_polygons_beside_the_maps_are_the_regions_of_the_mask(tmp_path):
    date1, date2, _, _ = pair(tmp_path, 120, 100)
    paths = predict_rasters(known_predictor(kernel=3), date1, date2, tmp_path / "out", window=32, stride=16,
                            quicklook=False, progress=False, polygons=True)
    assert paths["polygons"] == tmp_path / "out" / "change_polygons.gpkg"
    with rasterio.open(paths["mask"]) as src:
        mask, transform, crs = src.read(1), src.transform, src.crs
        probability = read_scaled(paths["probability"])
    meta, _, geometries, fields = pyogrio.raw.read(paths["polygons"])
    assert meta["crs"] == crs.to_string() and meta["geometry_type"] == "Polygon"
    regions = components((mask == 1).astype(np.uint8))
    assert len(geometries) == len(regions) > 5
    burnt = {rasterize([g], out_shape=mask.shape, transform=transform).astype(bool).tobytes()
             for g in shapely.from_wkb(geometries)}
    assert burnt == {r.tobytes() for r in regions}
    means = dict(zip(fields[0].tolist(), fields[2].tolist()))  # pixels -> mean probability (the float values)
    for region in regions:
        if list(fields[0]).count(region.sum()) == 1:
            assert abs(means[region.sum()] - probability[region].mean()) <= 1 / 254


def test_command_line_polygons_and_min_area(tmp_path, capsys):
    date1, date2, _ = write_geotiff_pair(tmp_path / "pair", 32, 32, with_label=False)
    model = save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    out = tmp_path / "out"
    argv = ["--model", str(model), "--date1", str(date1), "--date2", str(date2), "--out", str(out), "--window", "32",
            "--stride", "16", "--no-quicklook", "--force-inputs"]
    assert predict_cli.main([*argv, "--polygons", "--min-area", "0.5"]) == 0
    assert f"wrote {out / 'change_polygons.gpkg'}" in capsys.readouterr().out
    _, _, _, fields = pyogrio.raw.read(out / "change_polygons.gpkg")
    assert (fields[1] >= 0.5).all()
    with pytest.raises(SystemExit):
        predict_cli.parse_args([*argv, "--min-area", "3"])
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: --min-area goes with --polygons")
    assert predict_cli.main([*argv, "--probability-dtype", "float32"]) == 0
    with rasterio.open(out / "change_probability.tif") as src:
        assert src.dtypes[0] == "float32"

