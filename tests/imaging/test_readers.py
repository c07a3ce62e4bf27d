"""autotx_lib.imaging.readers against real files, the real JVM and real Bio-Formats."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers import (
    ArrayReader,
    Image,
    MetadataWarning,
    PlateInfo,
    WellInfo,
    check_image,
    open_image,
    registry,
    summarize,
)

ROOT = Path(__file__).resolve().parents[2]

# files both a native backend and Bio-Formats read with the same, explicit axes
SAME_AXES = [
    ("ome-tiff/aicsimageio_s_1_t_1_c_1_z_1.ome.tiff", "tifffile"),
    ("ome-tiff/ome_sample_multi-channel.ome.tif", "tifffile"),
    ("hcs/BBBC022_crop/IXMtest_A02_s9.tif", "tifffile"),
    ("hcs/Cellomics_ExampleHuman_D03/AS_09125_050116030001_D03f00d2.tif", "tifffile"),
    ("hcs/ImageXpress_9987_Plate_3435/TimePoint_1/9987_B02_s1_w1.TIF", "tifffile"),
    ("czi/aicsimageio_s_1_t_1_c_1_z_1.czi", "czifile"),
    ("czi/czitools_CellDivision_T3_Z5_CH2_X240_Y170.czi", "czifile"),
    ("hcs/czi_CD7_wells_D6-D7/WellD6-7_S2.czi", "czifile"),
    ("nd2/arcadia_example-multichannel.nd2", "nd2"),
    ("nd2/arcadia_example-zstack.nd2", "nd2"),
    ("nd2/arcadia_example-timelapse.nd2", "nd2"),
    ("lif/readlif_testdata_2channel_xz.lif", "readlif"),
]
MOSAIC_CZI = "czi/czitools_S3_1Pos_2Mosaic_T1_Z1_CH1.czi"
LAMBDA_LIF = "lif/readlif_LeicaLASX_wavelength-sweep_example.lif"
PLAIN_STACK = "zstack/pycudadecon_psf_bead_LLS.tif"
FAKE_PLATE = "SPW&plates=1&plateRows=8&plateCols=12&fields=2.fake"


@pytest.fixture(scope="module")
def mm_set(tmp_path_factory, sampledata) -> Path:
    """The Micro-Manager 4-position OME-TIFF set, gunzipped into one folder."""
    folder = tmp_path_factory.mktemp("mm")
    for gz in (sampledata / "ome-tiff" / "micromanager14_multipos").glob("*.gz"):
        with gzip.open(gz) as src, open(folder / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder / "1.4compatTest_3_MMStack_1-Pos_000_000.ome.tif"


@pytest.fixture(scope="module")
def fake_plate(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fake") / FAKE_PLATE
    path.touch()
    return path


def both(path: Path) -> tuple:
    native = open_image(path)
    bioformats = open_image(path, backend="bioformats")
    return native, bioformats


def assert_same_scenes(native, bf, *, skip_overlap: bool = False) -> None:
    assert len(native.scenes) == len(bf.scenes)
    for scene in native.scenes:
        native.set_scene(scene.index)
        bf.set_scene(scene.index)
        assert native.dims == bf.dims, scene
        assert native.dtype == bf.dtype
        d = native.dims
        for t in range(d.T):
            for c in range(d.C):
                for z in range(d.Z):
                    a, b = native.plane(t=t, c=c, z=z), bf.plane(t=t, c=c, z=z)
                    if skip_overlap:
                        single = native.tile_coverage() <= 1
                        np.testing.assert_array_equal(a[single], b[single])
                    else:
                        np.testing.assert_array_equal(a, b, err_msg=f"{scene} t={t} c={c} z={z}")


# --- the contract, on the in-memory reader ---------------------------------------------


def test_array_reader_passes_conformance():
    rng = np.random.default_rng(0)
    img = ArrayReader(
        [rng.integers(0, 4000, (2, 3, 4, 16, 8), dtype=np.uint16), np.zeros((5, 6), np.float32)],
        scene_names=["stack", "flat"],
        physical_pixel_sizes=(2.0, 0.5, 0.5),
    )
    check_image(img)
    assert img.set_scene("flat").dims.shape == (1, 1, 1, 5, 6)
    assert img.set_scene(0).plane(t=1, c=2, z=3).sum() == img.data[1, 2, 3].sum()


def test_array_reader_errors_teach():
    img = ArrayReader(np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(IndexError, match=r"z=3 is out of range .*Z=3; valid 0..2"):
        img.plane(z=3)
    with pytest.raises(ValueError, match="available scenes"):
        img.set_scene("nope")
    with pytest.raises(IndexError, match="valid indices 0..0"):
        img.set_scene(4)
    with pytest.raises(ValueError, match="chunk_dims"):
        img.get_dask_data("ZY")


def test_dask_chunks_one_plane_and_zyx_option():
    img = ArrayReader(np.arange(2 * 3 * 4 * 5, dtype=np.int32).reshape(2, 1, 3, 4, 5))
    assert img.dask_data.chunksize == (1, 1, 1, 4, 5)
    assert img.dask_data.numblocks == (2, 1, 3, 1, 1)
    stacked = img.get_dask_data("ZYX")
    assert stacked.chunksize == (1, 1, 3, 4, 5)
    np.testing.assert_array_equal(stacked.compute(), img.data)


# --- every backend runs the conformance checks on real files ------------------------------


@pytest.mark.parametrize("relpath,native", SAME_AXES + [(MOSAIC_CZI, "czifile"),
                                                         (LAMBDA_LIF, "readlif"),
                                                         (PLAIN_STACK, "tifffile")])
@pytest.mark.parametrize("which", ["native", "bioformats"])
def test_conformance_on_sample_files(sampledata, relpath, native, which):
    img = open_image(sampledata / relpath, backend=None if which == "native" else "bioformats")
    assert img.name == (native if which == "native" else "bioformats")
    check_image(img, max_planes=3)


# --- native and Bio-Formats agree -----------------------------------------------------------


@pytest.mark.parametrize("relpath,native", SAME_AXES)
def test_native_and_bioformats_give_identical_dims_and_pixels(sampledata, relpath, native):
    n, b = both(sampledata / relpath)
    assert n.name == native and b.name == "bioformats"
    assert_same_scenes(n, b)
    n.set_scene(0)
    b.set_scene(0)
    assert n.channel_names == b.channel_names


def test_micromanager_positions_are_four_scenes_in_both(mm_set):
    n, b = both(mm_set)
    assert n.name == "tifffile"
    assert len(n.scenes) == 4
    assert n.dims.shape == (2, 2, 2, 64, 64)
    assert_same_scenes(n, b)


def test_mosaic_czi_three_scenes_agree_outside_tile_overlaps(sampledata):
    n, b = both(sampledata / MOSAIC_CZI)
    assert [s.name for s in n.scenes] == ["TR1", "P1", "TR2"]
    assert [n.set_scene(i).dims.shape[3:] for i in range(3)] == [(122, 295), (64, 64), (237, 352)]
    assert_same_scenes(n, b, skip_overlap=True)
    # scene 1 is a single position: no overlap, identical everywhere
    np.testing.assert_array_equal(n.set_scene(1).data, b.set_scene(1).data)


def test_plain_tiff_stack_is_z_for_us_t_for_bioformats(sampledata):
    """Decision: a multi-page TIFF without axis metadata is a z-stack (a bead PSF here)."""
    n, b = both(sampledata / PLAIN_STACK)
    assert n.dims.shape == (1, 1, 61, 128, 128)
    assert b.dims.shape == (61, 1, 1, 128, 128)  # what Bio-Formats alone says
    np.testing.assert_array_equal(n.data[0, 0], b.data[:, 0, 0])
    assert n.data.max() == 7792


def test_lambda_sweep_is_channels_for_us_t_for_bioformats(sampledata):
    """Decision: a Leica lambda sweep is C (one channel per wavelength step)."""
    n, b = both(sampledata / LAMBDA_LIF)
    assert [s.name for s in n.scenes] == ["x_y_lambdaEmi", "x_y_lambdaExc", "x_y_z_t_lambdaEmi"]
    assert n.set_scene(0).dims.shape == (1, 20, 1, 64, 64)
    assert n.channel_names[:2] == ["lambda:0", "lambda:1"]
    # 20 emission bands from 550 nm over 190 nm; the excitation sweep: 15 from 490 over 70
    assert [c.emission_nm for c in n.channels] == pytest.approx([550 + 10 * i for i in range(20)])
    assert [c.excitation_nm for c in n.set_scene(1).channels] == pytest.approx(
        [490 + 5 * i for i in range(15)])
    n.set_scene(0)
    assert b.set_scene(0).dims.shape == (20, 1, 1, 64, 64)
    np.testing.assert_array_equal(n.data[0, :, 0], b.data[:, 0, 0])
    assert n.set_scene(2).dims.shape == (2, 10, 11, 64, 64)
    assert b.set_scene(2).dims.shape == (20, 1, 11, 64, 64)
    # Bio-Formats' T runs over (time, wavelength), wavelength fastest
    ours = n.data  # (T=2, C=10, Z, Y, X)
    theirs = b.data[:, 0].reshape(2, 10, 11, 64, 64)
    np.testing.assert_array_equal(ours, theirs)


def test_pixels_come_in_the_files_dtype_without_rescaling(sampledata):
    n, b = both(sampledata / "ome-tiff/ome_sample_multi-channel.ome.tif")
    assert n.dtype == b.dtype == np.int8
    assert b.data.min() < 0  # signed values survive (rescale would map them to 0..1 floats)
    b16 = open_image(sampledata / "nd2/arcadia_example-zstack.nd2", backend="bioformats")
    assert b16.dtype == np.uint16 and b16.data.max() > 255


# --- scenes, metadata, plates ------------------------------------------------------------


def test_metadata_has_ome_model_and_raw_xml(sampledata):
    img = open_image(sampledata / "ome-tiff/aicsimageio_s_1_t_1_c_1_z_1.ome.tiff")
    meta = img.metadata
    assert "<OME" in meta.ome_xml
    assert meta.ome.images[0].pixels.size_x == 475
    assert img.channel_names == ["Bright"]
    assert pytest.approx(1.0833333) == img.physical_pixel_sizes.X


def test_fake_plate_layout(fake_plate):
    img = open_image(fake_plate)
    assert img.name == "bioformats" and len(img.scenes) == 192
    plate = img.plate
    assert isinstance(plate, PlateInfo)
    assert (plate.rows, plate.columns, len(plate.wells)) == (8, 12, 96)
    assert plate.wells[0] == WellInfo("A01", 0, 0, [0, 1])
    assert plate.wells[-1].name == "H12" and plate.wells[-1].fields == [190, 191]
    fields = sorted(f for w in plate.wells for f in w.fields)
    assert fields == list(range(192))


def test_czi_well_plate_scenes_and_plate(sampledata):
    path = sampledata / "hcs/czi_CD7_wells_D6-D7/WellD6-7_S2.czi"
    native, bf = both(path)
    assert [s.name for s in native.scenes] == ["D6", "D7"]
    for img in (native, bf):  # Bio-Formats names its scenes "WellD6-7_S2.czi #1"...
        plate = img.plate
        assert (plate.rows, plate.columns) == (8, 12), img.name
        assert [(w.name, w.row, w.column, w.fields) for w in plate.wells] == [
            ("D06", 3, 5, [0]), ("D07", 3, 6, [1])]


def test_no_plate_for_ordinary_files(sampledata):
    assert open_image(sampledata / MOSAIC_CZI).plate is None
    assert open_image(sampledata / "nd2/arcadia_example-zstack.nd2").plate is None


def test_scene_option_of_open_image(sampledata):
    img = open_image(sampledata / "lif/readlif_testdata_2channel_xz.lif", scene="xz")
    assert img.current_scene_index == 2 and img.dims.shape == (1, 2, 1, 512, 512)


# --- threads and the JVM ----------------------------------------------------------------------


def test_dask_threads_read_through_bioformats(sampledata):
    img = open_image(sampledata / "czi/czitools_CellDivision_T3_Z5_CH2_X240_Y170.czi",
                     backend="bioformats")
    lazy = img.dask_data
    assert lazy.numblocks == (3, 2, 5, 1, 1)
    total = lazy.astype(np.uint64).sum().compute(scheduler="threads", num_workers=2)
    assert total == img.data.astype(np.uint64).sum()


def test_jvm_cannot_be_reconfigured_once_running(sampledata):
    from autotx_lib.imaging.readers import jvm

    open_image(sampledata / "czi/aicsimageio_s_1_t_1_c_1_z_1.czi", backend="bioformats")
    assert jvm.jvm_is_running()
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        jvm.configure_jvm(max_heap_size="1g")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        timeout=120, cwd=ROOT, env={**os.environ, **env},
    )


def test_import_starts_nothing():
    result = run_python("""
        import sys, autotx_lib.imaging.readers as r
        heavy = [m for m in ("javabridge", "bioformats", "tifffile", "nd2", "readlif", "czifile",
                             "dask", "ome_types") if m in sys.modules]
        print(heavy)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_java_says_how_to_install(sampledata, tmp_path):
    result = run_python(f"""
        from autotx_lib.errors import ReaderError
        from autotx_lib.imaging.readers import open_image
        try:
            open_image({str(sampledata / 'czi/aicsimageio_s_1_t_1_c_1_z_1.czi')!r}, backend="bioformats")
        except ReaderError as e:
            print("READER-ERROR", e)
    """, JAVA_HOME=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "READER-ERROR" in result.stdout
    assert "apt-get install default-jdk-headless" in result.stdout
    assert "bioformats" in result.stdout


# --- bad inputs: always ReaderError, naming file, backends and why ---------------------------


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("suffix", ["tif", "czi", "nd2", "lif", "ome.tif"])
def test_garbage_with_a_known_extension(tmp_path, suffix):
    path = write(tmp_path / f"junk.{suffix}", np.random.default_rng(1).bytes(4096))
    with pytest.raises(ReaderError) as info:
        open_image(path)
    assert str(path) in str(info.value)
    assert "bioformats" in info.value.tried
    assert len(info.value.tried) == 2  # the native backend and Bio-Formats


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
@pytest.mark.parametrize("relpath", [
    "ome-tiff/aicsimageio_s_1_t_1_c_1_z_1.ome.tiff",
    PLAIN_STACK,
    "czi/czitools_CellDivision_T3_Z5_CH2_X240_Y170.czi",
    "nd2/arcadia_example-zstack.nd2",
    "lif/readlif_testdata_2channel_xz.lif",
])
def test_truncated_files_never_give_wrong_pixels(sampledata, tmp_path, relpath, fraction):
    """A truncated file raises ReaderError, or (if only trailing metadata was cut) reads right."""
    source = sampledata / relpath
    cut = int(source.stat().st_size * fraction)
    path = write(tmp_path / source.name, source.read_bytes()[:cut])
    try:
        img = open_image(path)
        planes = {s.index: img.set_scene(s.index).data for s in img.scenes}
    except ReaderError as error:
        assert str(path) in str(error)
        assert error.tried
        if not relpath.endswith((".tif", ".tiff")):
            assert "truncated" in str(error)
        return
    original = open_image(source)
    assert img.name == original.name
    for index, data in planes.items():
        np.testing.assert_array_equal(data, original.set_scene(index).data)


def test_empty_missing_folder_and_unsupported(tmp_path):
    empty = write(tmp_path / "empty.czi", b"")
    with pytest.raises(ReaderError, match="empty.*0 bytes"):
        open_image(empty)
    with pytest.raises(ReaderError, match="no such file"):
        open_image(tmp_path / "missing.nd2")
    with pytest.raises(ReaderError, match="folder"):
        open_image(tmp_path)
    odd = write(tmp_path / "notes.xyz", b"hello, not an image\n" * 50)
    with pytest.raises(ReaderError) as info:
        open_image(odd)
    assert list(info.value.tried) == ["bioformats"]


def test_wrong_extension(sampledata, tmp_path):
    # a text file posing as TIFF fails in both backends
    with pytest.raises(ReaderError) as info:
        open_image(write(tmp_path / "a.tif", b"just text " * 100))
    assert set(info.value.tried) == {"tifffile", "bioformats"}
    # a real TIFF posing as ND2: the nd2 backend refuses it, Bio-Formats reads it by content
    tiff = sampledata / "hcs/Cellomics_ExampleHuman_D03/AS_09125_050116030001_D03f00d2.tif"
    disguised = write(tmp_path / "b.nd2", tiff.read_bytes())
    try:
        img = open_image(disguised)
    except ReaderError as error:
        assert "nd2" in error.tried and "bioformats" in error.tried
    else:
        assert img.name == "bioformats"
        np.testing.assert_array_equal(img.plane(), open_image(tiff).plane())


def test_unknown_backend_lists_valid_ones(sampledata):
    with pytest.raises(ValueError, match="available: tifffile, nd2"):
        open_image(sampledata / PLAIN_STACK, backend="nope")


# --- registry and plugins -----------------------------------------------------------------------


def test_registry_order_native_first_bioformats_last():
    assert [s.name for s in registry.candidates("x.ome.tif")] == ["tifffile", "bioformats"]
    assert [s.name for s in registry.candidates("x.CZI")] == ["czifile", "bioformats"]
    assert [s.name for s in registry.candidates("x.lif")] == ["readlif", "bioformats"]
    assert [s.name for s in registry.candidates("x.nd2")] == ["nd2", "bioformats"]
    assert [s.name for s in registry.candidates("x.HTD")] == ["imagexpress", "bioformats"]
    assert [s.name for s in registry.candidates("x.dv")] == ["bioformats"]
    assert [s.name for s in registry.candidates("x.unknownext")] == ["bioformats"]


def test_entry_point_plugins_register_and_broken_ones_warn(tmp_path, monkeypatch):
    (tmp_path / "toyreader.py").write_text(textwrap.dedent("""
        import numpy as np
        from autotx_lib.imaging.readers import Image

        class ToyReader(Image):
            name = "toy"
            extensions = ("toy",)
            def _scene_list(self):
                return [("Image:0", "toy")]
            def _scene_sizes(self, scene):
                return {"T": 1, "C": 1, "Z": 2, "Y": 3, "X": 4}
            def _scene_dtype(self, scene):
                return np.dtype("uint8")
            def _read_plane(self, scene, t, c, z):
                return np.full((3, 4), z, np.uint8)
    """))
    dist = tmp_path / "toyreader-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toyreader\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[autotx_lib.readers]\ntoy = toyreader:ToyReader\nbroken = toyreader_missing:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.warns(RuntimeWarning, match="'broken'.*failed to load"):
            loaded = registry.load_plugins(reload=True)
        assert loaded == ["toy"]
        assert [s.name for s in registry.candidates("a.toy")] == ["toy", "bioformats"]
        img = open_image(write(tmp_path / "a.toy", b"x"))
        assert img.name == "toy" and img.plane(z=1).max() == 1
        check_image(img)
    finally:
        registry.unregister("toy")


# --- faces: summarize, python -m, autotx info ------------------------------------------------------


def test_summarize_lists_scenes_and_plate(fake_plate, sampledata):
    text = summarize(sampledata / MOSAIC_CZI)
    assert "backend: czifile" in text and "scenes: 3" in text and "TR2" in text
    plate_text = summarize(fake_plate)
    assert "plate:" in plate_text and "(8x12), 96 well(s)" in plate_text
    assert "172 more scene(s)" in plate_text


def test_python_dash_m_prints_summary(sampledata, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "autotx_lib.imaging.readers", str(sampledata / PLAIN_STACK),
         str(write(tmp_path / "empty.tif", b""))],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "backend: tifffile" in result.stdout and "Z=61" in result.stdout
    assert "empty" in result.stderr


def test_autotx_info_command(sampledata, tmp_path):
    from typer.testing import CliRunner

    from autotx_lib.cli.main import app

    runner = CliRunner()
    ok = runner.invoke(app, ["info", str(sampledata / "nd2/arcadia_example-multichannel.nd2")])
    assert ok.exit_code == 0, ok.output
    assert "backend: nd2" in ok.output
    assert "channels Mono, DAPI (ex 405 / em 450 nm), FITC BP (ex 405 / em 512 nm)" in ok.output
    assert "objective: Plan Apo λ 20x, 20x, NA 0.75" in ok.output
    bad = runner.invoke(app, ["info", str(write(tmp_path / "bad.czi", b"\0" * 100))])
    assert bad.exit_code == 2
    assert "cannot read" in bad.output and "czifile" in bad.output


def test_no_warnings_when_reading_multifile_set(mm_set):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = open_image(mm_set)
        for i in range(4):
            img.set_scene(i).data  # noqa: B018
        img.close()


# --- metadata problems are reported, Java stays out of sight (issue 11) --------------------------


def test_micromanager_ome_metadata_matches_bioformats(mm_set):
    """MM 1.4 writes OME-XML of schema 2015-01: parsing it needs lxml (ome-types[lxml])."""
    n, b = both(mm_set)
    assert n.name == "tifffile"
    for i in range(4):
        n.set_scene(i)
        b.set_scene(i)
        assert n.physical_pixel_sizes == b.physical_pixel_sizes == (5.0, 1.0, 1.0)
        assert n.channel_names == b.channel_names == ["Cy5", "DAPI"]
    assert n.metadata.ome is not None and n.metadata_problems == []


def test_unparsable_ome_xml_is_a_warning_naming_file_and_part():
    class BadXml(ArrayReader):
        def _ome_xml(self):
            return "<OME><Image ID='Image:0'><Pixels"  # cut short

    img = BadXml(np.zeros((4, 4), np.uint8), path="/data/cut.ome.tif")
    with pytest.warns(MetadataWarning, match=r"/data/cut\.ome\.tif: the OME-XML could not be read"):
        meta = img.metadata
    assert meta.ome is None and meta.ome_xml.startswith("<OME")
    assert len(img.metadata_problems) == 1 and "\n" not in img.metadata_problems[0]
    assert img.channel_names == ["C:0"]  # the image stays usable


CV8000_WPI = "hcs/CV8000_metadata_only/CV8000-Minimal-DataSet-2C-3W-4S-FP2-stack.wpi"


@pytest.mark.parametrize("relpath,advice", [
    (CV8000_WPI, "MeasurementData.mlf"),
    ("hcs/ImageXpress_9987_Plate_3435/9987.HTD", "TimePoint_N"),
])
def test_bioformats_errors_are_one_line_without_java_output(sampledata, capfd, relpath, advice):
    with pytest.raises(ReaderError) as info:
        open_image(sampledata / relpath, backend="bioformats")
    text = str(info.value)
    assert "\n" not in text and str(sampledata / relpath) in text and advice in text
    assert "Java object" not in text and "JavaException" not in text
    stderr = capfd.readouterr().err
    assert "Exception in thread" not in stderr and "\tat loci." not in stderr


def test_folder_error_names_its_plate_file(sampledata):
    folder = sampledata / "hcs/ImageXpress_9987_Plate_3435"
    with pytest.raises(ReaderError, match=r"open its plate file .*9987\.HTD"):
        open_image(folder)


def test_autotx_info_errors_are_one_line(sampledata):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "autotx"), "info", str(sampledata / CV8000_WPI)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("error:") or "Traceback" in line or "\tat " in line]
    assert len(errors) == 1 and errors[0].startswith("error: cannot read"), result.stderr
    unknown = subprocess.run(
        [str(Path(sys.executable).parent / "autotx"), "info", str(sampledata / PLAIN_STACK),
         "--backend", "nope"], capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "unknown reader backend 'nope'" in unknown.stderr


# --- native metadata equals Bio-Formats' (issue 11) -----------------------------------------------

# Where the two legitimately differ, and why (asserted below, so this list stays true).
DPI_ONLY = {  # resolution tags of a paint program, no calibration; BF converts dpi to um
    "hcs/Cellomics_ExampleHuman_D03/AS_09125_050116030001_D03f00d2.tif",
    "hcs/Cellomics_ExampleHuman_D03/AS_09125_050116030001_D03f00d0.tif",
    "hcs/Cellomics_BBBC016_rowO/AS_09047_050428030001_O01f00d2.TIF",
}
SAVE_TIME_ONLY = {  # BF takes the TIFF DateTime tag (when Photoshop saved it) as acquisition
    "hcs/Cellomics_ExampleHuman_D03/AS_09125_050116030001_D03f00d2.tif",
}
XZ_LIF = "lif/readlif_testdata_2channel_xz.lif"


def _seconds(when):
    """Compare times to the second, as naive UTC-or-local wall time (BF drops zones)."""
    return None if when is None else when.replace(tzinfo=None, microsecond=0)


@pytest.mark.parametrize("relpath", [rel for rel, _ in SAME_AXES] + sorted(DPI_ONLY - {
    rel for rel, _ in SAME_AXES}) + [MOSAIC_CZI, "hcs/ImageXpress_9987_Plate_3435/TimePoint_1/"
                                     "9987_B03_s2_w2.TIF"])
def test_native_metadata_matches_bioformats(sampledata, relpath):
    n, b = both(sampledata / relpath)
    assert n.name != "bioformats"
    for scene in n.scenes:
        n.set_scene(scene.index)
        b.set_scene(scene.index)
        where = f"{relpath} scene {scene.index}"
        assert n.channel_names == b.channel_names, where
        for ours, theirs in zip(n.channels, b.channels, strict=True):
            for field in ("excitation_nm", "emission_nm"):
                if getattr(theirs, field) is not None and not relpath.endswith(".nd2"):
                    assert getattr(ours, field) == getattr(theirs, field), (where, field)
        if n.scan_axes == "ZYX":
            for axis, ours, theirs in zip("ZYX", n.physical_pixel_sizes, b.physical_pixel_sizes,
                                          strict=True):
                if relpath in DPI_ONLY and axis != "Z":
                    assert ours is None and theirs is not None, (where, axis)
                elif theirs is not None and not (axis == "Z" and n.dims.Z == 1):
                    assert ours == pytest.approx(theirs, rel=1e-6), (where, axis)
        if relpath in SAVE_TIME_ONLY:
            assert n.acquisition_time is None and b.acquisition_time is not None
        elif b.acquisition_time is not None:
            assert _seconds(n.acquisition_time) == _seconds(b.acquisition_time), where
        if b.objective is not None:
            assert n.objective.name == b.objective.name, where
            for field in ("magnification", "numerical_aperture"):
                if getattr(b.objective, field) is not None:
                    assert getattr(n.objective, field) == getattr(b.objective, field), where
        assert n.metadata_problems == [], n.metadata_problems


def test_nd2_metadata_has_what_bioformats_has_and_more(sampledata):
    """ND2: emission, objective and NA agree; nd2 also reads the acquisition date and the
    excitation the file records (Bio-Formats 7.3 reports neither)."""
    n, b = both(sampledata / "nd2/arcadia_example-multichannel.nd2")
    assert [c.emission_nm for c in n.channels] == [c.emission_nm for c in b.channels] == [
        None, 450.0, 512.0, 595.0]
    assert b.acquisition_time is None and n.acquisition_time.year == 2025
    assert n.objective.magnification == 20.0 and b.objective.magnification is None


def test_xz_scans_are_labelled_and_scaled_as_xz(sampledata):
    """A Leica XZ plane's rows are depth: its row spacing is a Z spacing, not Y."""
    n, b = both(sampledata / XZ_LIF)
    for index, name in enumerate(["xzt", "xzy", "xz"]):
        n.set_scene(index)
        b.set_scene(index)
        assert n.current_scene.name == name and n.scan_axes == "YZX"
        assert b.scan_axes == "ZYX"  # Bio-Formats draws the plane as XY
        rows, columns = n.plane_pixel_size
        # the same numbers, now under their physical axis
        assert rows == pytest.approx(b.physical_pixel_sizes.Y, rel=1e-6)
        assert rows == n.physical_pixel_sizes.Z
        assert columns == pytest.approx(b.physical_pixel_sizes.X, rel=1e-6)
    # xzy: the stacked positions step along Y (Bio-Formats calls them Z)
    n.set_scene(1)
    b.set_scene(1)
    y_step = n.physical_pixel_sizes.Y
    assert y_step == pytest.approx(b.physical_pixel_sizes.Z, rel=1e-6)
    assert n.array_pixel_sizes == (y_step, n.physical_pixel_sizes.Z, n.physical_pixel_sizes.X)
    n.set_scene(2)
    assert n.physical_pixel_sizes.Y is None  # one Y position: no Y spacing
    n.set_scene(0)
    assert n.time_increment == pytest.approx(10.07 / 19)  # 20 frames over 10.07 s
    text = summarize(sampledata / XZ_LIF)
    assert "XZ scan: plane rows are Z, the Z index steps along Y" in text
    assert "channels Leica/FITC, Leica/TRITC" in text


def test_ordinary_images_are_zyx_scans(sampledata):
    img = open_image(sampledata / "czi/czitools_CellDivision_T3_Z5_CH2_X240_Y170.czi")
    assert img.scan_axes == "ZYX"
    assert img.plane_pixel_size == (img.physical_pixel_sizes.Y, img.physical_pixel_sizes.X)
    assert img.array_pixel_sizes == img.physical_pixel_sizes


def test_ome_essentials_convert_units_without_the_ome_model():
    from autotx_lib.imaging.readers.ome_xml import summarize_ome

    xml = """<?xml version="1.0" encoding="UTF-8"?>
    <OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2015-01">
      <Instrument ID="Instrument:0">
        <Objective ID="Objective:0" Model="UPLSAPO 60XO" NominalMagnification="60"
                   LensNA="1.35" Immersion="Oil"/>
      </Instrument>
      <Image ID="Image:0" Name="cells">
        <AcquisitionDate>2020-05-04T10:20:30</AcquisitionDate>
        <ObjectiveSettings ID="Objective:0"/>
        <Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="4" SizeY="4" SizeZ="1"
                SizeC="2" SizeT="3" PhysicalSizeX="108" PhysicalSizeXUnit="nm"
                PhysicalSizeY="0.108" TimeIncrement="250" TimeIncrementUnit="ms">
          <Channel ID="Channel:0:0" Name="GFP" ExcitationWavelength="0.488"
                   ExcitationWavelengthUnit="µm" EmissionWavelength="510"/>
          <Channel ID="Channel:0:1" Name="RFP"/>
        </Pixels>
      </Image>
    </OME>"""
    image = summarize_ome(xml).images[0]
    assert image.pixel_sizes == (None, 0.108, pytest.approx(0.108))
    assert image.channel_names == ["GFP", "RFP"]
    assert image.wavelengths == [(pytest.approx(488.0), 510.0), (None, None)]
    assert image.time_increment == pytest.approx(0.25)
    assert image.acquisition_time.isoformat() == "2020-05-04T10:20:30"
    assert (image.objective.name, image.objective.magnification, image.objective.immersion) == (
        "UPLSAPO 60XO", 60.0, "Oil")
    assert summarize_ome(xml).has_plate is False


def test_ome_tiff_essentials_need_no_ome_model(mm_set):
    """Pixel sizes, channels and objective of an OME-TIFF come without importing ome-types
    (its first parse in a process costs hundreds of milliseconds)."""
    result = run_python(f"""
        import sys
        from autotx_lib.imaging.readers import open_image
        img = open_image({str(mm_set)!r})
        print(img.physical_pixel_sizes, img.channel_names, img.acquisition_time, img.plate)
        print("ome_types" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "['Cy5', 'DAPI'] 2016-02-11 17:00:16 None" in lines[0]
    assert lines[1] == "False"


def test_a_bad_ome_value_loses_only_itself():
    class OddDate(ArrayReader):
        def _ome_xml(self):
            return ('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
                    '<Image ID="Image:0"><AcquisitionDate>yesterday</AcquisitionDate>'
                    '<Pixels ID="Pixels:0" PhysicalSizeX="0.5" PhysicalSizeY="n/a"/></Image></OME>')

        def _physical_pixel_sizes(self, scene):  # the base's OME default, not ArrayReader's
            return Image._physical_pixel_sizes(self, scene)

    img = OddDate(np.zeros((4, 4), np.uint8), path="/data/odd.ome.tif")
    with pytest.warns(MetadataWarning) as caught:
        assert img.physical_pixel_sizes == (None, None, 0.5)
        assert img.acquisition_time is None
    messages = [str(w.message) for w in caught]
    assert any("the OME AcquisitionDate could not be read ('yesterday' is no date)" in m
               for m in messages)
    assert any("the OME PhysicalSizeY could not be read" in m for m in messages)
