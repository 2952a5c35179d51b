"""utilities/inference/polygons.py: regions built strip by strip against OpenCV's connected components of the whole
raster, areas in square metres (projected, in feet, and on the ellipsoid against the closed-form area of
latitude-longitude cells), the CRS round trip through the GeoPackage, --min-area, classes, and the file."""
import cv2
import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize

import evaluate as evaluate_cli
from tests.utilities.fakes import write_geotiff
from utilities.errors import InputError
from utilities.inference.polygons import (
    OUTCOMES,
    RegionPolygons,
    check_min_area,
    outcome_classes,
    polygon_writer,
)

UTM = CRS.from_epsg(32633)
UTM_TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 6500000.0)


def blobs(height: int, width: int, seed: int, level: float = 0.52) -> np.ndarray:
    """A uint8 {0, 1} mask of irregular regions of many sizes, with holes and diagonal contacts."""
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    return (cv2.GaussianBlur(noise, (0, 0), 2) > level).astype(np.uint8)


def write(path, classes, probability, crs=UTM, transform=UTM_TRANSFORM, names=None, seed=0, **kwargs):
    """Feed the rows in strips of random heights (1-40 rows); return (geometries, fields by name, metadata)."""
    rng = np.random.default_rng(seed)
    with polygon_writer(path, classes.shape[1], crs, transform, names or {1: "change"}, **kwargs) as add:
        row = 0
        while row < len(classes):
            n = int(rng.integers(1, 41))
            add(classes[row:row + n], probability[row:row + n])
            row += n
    meta, _, geometries, values = pyogrio.raw.read(path)
    return shapely.from_wkb(geometries), dict(zip(meta["fields"], values)), meta


def components(mask: np.ndarray):
    count, labels = cv2.connectedComponents(mask, connectivity=4)
    return [labels == k for k in range(1, count)]


def test_one_polygon_per_connected_region_with_its_pixels_area_and_probabilities(tmp_path):
    mask = blobs(300, 200, seed=1)
    probability = np.random.default_rng(2).random(mask.shape).astype(np.float32)
    polygons, fields, meta = write(tmp_path / "p.gpkg", mask, probability)
    regions = components(mask)
    assert len(regions) > 100 and len(polygons) == len(regions)
    assert meta["geometry_type"] == "Polygon" and shapely.is_valid(polygons).all()
    assert list(meta["fields"]) == ["pixels", "area_m2", "mean_probability", "max_probability"]
    # each polygon, burnt back onto the grid (pixel centres inside), is exactly one region of the mask
    expected = {region.tobytes(): region for region in regions}
    for polygon, pixels, area, mean, peak in zip(polygons, *(fields[k] for k in meta["fields"])):
        burnt = rasterize([polygon], out_shape=mask.shape, transform=UTM_TRANSFORM).astype(bool)
        region = expected.pop(burnt.tobytes())
        assert pixels == region.sum()
        assert area == pytest.approx(0.25 * pixels, rel=1e-12) and polygon.area == pytest.approx(area, rel=1e-12)
        assert mean == pytest.approx(probability[region].astype(np.float64).mean(), rel=1e-12)
        assert peak == probability[region].max()
    assert expected == {}


def test_regions_joined_across_strips_in_any_shape(tmp_path):
    """A U (two arms joined only by a later strip), an inverted U (split below) and a ring around a hole."""
    mask = np.zeros((30, 40), np.uint8)
    mask[0:20, 2:4] = mask[0:20, 8:10] = mask[18:20, 2:10] = 1  # U
    mask[0:2, 14:22] = mask[0:20, 14:16] = mask[0:20, 20:22] = 1  # inverted U
    mask[5:15, 26:36] = 1
    mask[8:12, 29:33] = 0  # ring
    for seed in range(5):
        polygons, fields, _ = write(tmp_path / f"u{seed}.gpkg", mask, mask.astype(np.float32), seed=seed)
        assert sorted(fields["pixels"].tolist()) == sorted(r.sum() for r in components(mask))
        assert len(polygons) == 3 and sum(len(p.interiors) for p in polygons) == 1  # the ring's hole


def test_strips_of_one_row_give_the_same_regions(tmp_path):
    mask = blobs(60, 80, seed=3)
    regions = RegionPolygons(80)
    done = []
    for row in range(60):
        done += regions.add(mask[row:row + 1], np.ones((1, 80)))
        assert len(regions.regions) <= 80  # only the regions crossing the current row are held
    done += regions.close()
    assert sorted(r.pixels for r in done) == sorted(r.sum() for r in components(mask))


def test_classes_are_separate_regions_with_their_names(tmp_path):
    outcome = np.zeros((20, 30), np.uint8)
    outcome[2:8, 2:10] = 1  # TP
    outcome[2:8, 10:14] = 2  # FP, touching the TP region
    outcome[12:18, 5:25] = 3  # FN
    outcome[15, 7] = 0
    names = {1: "TP", 2: "FP", 3: "FN"}
    polygons, fields, meta = write(tmp_path / "o.gpkg", outcome, np.zeros(outcome.shape), names=names)
    assert list(meta["fields"])[0] == "class"
    assert sorted(zip(fields["class"].tolist(), fields["pixels"].tolist())) == [("FN", 119), ("FP", 24), ("TP", 48)]


def test_min_area_leaves_out_the_small_regions(tmp_path):
    mask = blobs(200, 200, seed=4)
    polygons, fields, _ = write(tmp_path / "m.gpkg", mask, np.zeros(mask.shape), min_area=10.0)
    kept = sorted(r.sum() for r in components(mask) if 0.25 * r.sum() >= 10.0)
    assert 0 < len(kept) < len(components(mask)) and sorted(fields["pixels"].tolist()) == kept


def test_crs_round_trip_and_areas_in_feet(tmp_path):
    """A projected CRS in US survey feet: coordinates stay in feet, areas are converted to square metres."""
    feet = CRS.from_epsg(2263)
    transform = Affine(2.0, 0, 980000.0, 0, -2.0, 200000.0)
    mask = blobs(50, 60, seed=5)
    polygons, fields, meta = write(tmp_path / "f.gpkg", mask, np.zeros(mask.shape), crs=feet, transform=transform)
    assert CRS.from_user_input(meta["crs"]) == feet
    np.testing.assert_allclose(shapely.area(polygons), 4.0 * fields["pixels"], rtol=1e-12)
    np.testing.assert_allclose(fields["area_m2"], 4.0 * fields["pixels"] * (1200 / 3937) ** 2, rtol=1e-12)


def cell_areas(lat_top: float, step: float, rows: int) -> np.ndarray:
    """Closed-form WGS84 area (m2) of a latitude-longitude cell of ``step`` degrees, per row from ``lat_top`` down:
    (b^2 dlon / 2) (q(lat1) - q(lat2)), q(x) = sin x / (1 - e2 sin^2 x) + ln((1 + e sin x) / (1 - e sin x)) / (2e)."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    e, b = np.sqrt(e2), a * (1 - f)

    def q(lat):
        s = np.sin(np.radians(lat))
        return s / (1 - e2 * s * s) + np.log((1 + e * s) / (1 - e * s)) / (2 * e)

    edges = lat_top - step * np.arange(rows + 1)
    return b * b * np.radians(step) / 2 * (q(edges[:-1]) - q(edges[1:]))


def test_areas_in_a_geographic_crs_are_on_the_ellipsoid(tmp_path):
    step, top = 1e-4, 60.0
    transform = Affine(step, 0, 10.0, 0, -step, top)
    mask = blobs(400, 300, seed=6, level=0.5)
    _, fields, meta = write(tmp_path / "g.gpkg", mask, np.zeros(mask.shape), crs=CRS.from_epsg(4326),
                            transform=transform)
    assert CRS.from_user_input(meta["crs"]) == CRS.from_epsg(4326)
    per_row = cell_areas(top, step, 400)
    expected = sorted(float((r * per_row[:, None]).sum()) for r in components(mask))
    np.testing.assert_allclose(sorted(fields["area_m2"].tolist()), expected, rtol=1e-7)
    assert 61 < per_row[0] < 63  # guard of the formula: a 1e-4 degree cell at 60 N is about 11.1 m x 5.6 m


@pytest.mark.filterwarnings("error")  # pyogrio's warning about a layer without CRS is not passed on
def test_raster_without_crs_gives_pixel_coordinates_and_no_area(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[2:4, 3:7] = 1
    polygons, fields, meta = write(tmp_path / "n.gpkg", mask, np.zeros(mask.shape), crs=None, transform=None)
    assert meta["crs"] is None and polygons[0].bounds == (3.0, 2.0, 7.0, 4.0)
    assert np.isnan(fields["area_m2"]).all() and fields["pixels"].tolist() == [8]


def test_no_region_gives_an_empty_layer_with_its_fields(tmp_path):
    polygons, fields, meta = write(tmp_path / "e.gpkg", np.zeros((20, 20), np.uint8), np.zeros((20, 20)))
    assert len(polygons) == 0 and list(meta["fields"]) == ["pixels", "area_m2", "mean_probability", "max_probability"]
    assert pyogrio.read_info(tmp_path / "e.gpkg")["layer_name"] == "e"


def test_failure_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError, match="stopped"):
        with polygon_writer(tmp_path / "x.gpkg", 10, UTM, UTM_TRANSFORM, {1: "change"}) as add:
            add(np.ones((3, 10), np.uint8), np.ones((3, 10)))
            raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []


def test_min_area_needs_a_crs_and_a_positive_value(tmp_path):
    with pytest.raises(InputError) as err:
        check_min_area(5.0, None, tmp_path / "a.png")
    assert str(err.value) == (f"--min-area is in square metres but {tmp_path / 'a.png'} has no CRS: polygons of "
                              f"rasters without one have no area.")
    with pytest.raises(InputError, match="--min-area must be >= 0 square metres, got -1.0."):
        check_min_area(-1.0, UTM, tmp_path / "a.tif")
    check_min_area(0.0, None, tmp_path / "a.png")



def test_outcome_classes_code_tp_fp_fn_and_leave_out_true_negatives_and_nodata():
    pred = np.array([[1, 1, 0, 0, 1]], bool)
    label = np.array([[1, 0, 1, 0, 1]], bool)
    valid = np.array([[1, 1, 1, 1, 0]], bool)
    np.testing.assert_array_equal(outcome_classes(pred, label, valid), [[1, 2, 3, 0, 0]])


def test_evaluate_writes_the_tp_fp_fn_regions_of_a_prediction(tmp_path, capsys):
    rng = np.random.default_rng(8)
    probability = rng.random((60, 70)).astype(np.float32)
    probability = cv2.GaussianBlur(probability, (0, 0), 2)
    probability = (probability - probability.min()) / (probability.max() - probability.min())
    label = blobs(60, 70, seed=9, level=0.5)
    prediction = write_geotiff(tmp_path / "change_probability.tif", probability[None], transform=UTM_TRANSFORM)
    label_file = write_geotiff(tmp_path / "label.tif", label[None] * np.uint8(255), transform=UTM_TRANSFORM)
    out = tmp_path / "eval"
    argv = ["--prediction", str(prediction), "--label", str(label_file), "--out", str(out)]
    assert evaluate_cli.main([*argv, "--polygons"]) == 0
    assert "TP/FP/FN maps and polygons" in capsys.readouterr().out
    meta, _, geometries, fields = pyogrio.raw.read(out / "change_probability_tpfpfn.gpkg")
    assert meta["crs"] == "EPSG:32633" and list(meta["fields"])[0] == "class"
    outcomes = outcome_classes(probability >= 0.5, label, np.ones(label.shape, bool))
    for code, name in OUTCOMES.items():
        expected = sorted(r.sum() for r in components((outcomes == code).astype(np.uint8)))
        assert expected and sorted(p for c, p in zip(fields[0], fields[1]) if c == name) == expected, name
    assert evaluate_cli.main([*argv, "--min-area", "2"]) == 2
    assert capsys.readouterr().err == "error: --min-area goes with --polygons\n"
