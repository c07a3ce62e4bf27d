"""The native ImageXpress (.HTD) plate reader, against real MetaXpress exports and Bio-Formats."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers import check_image, open_image
from autotx_lib.imaging.readers.htd import find_htd_files, read_htd

ROOT = Path(__file__).resolve().parents[2]
PARTIAL = "hcs/ImageXpress_9987_Plate_3435"  # HTD: 6 t, 4 waves; export: 1 t, w1 w2
ZSERIES = "hcs/ImageXpress_zseries_9987_Plate_3434"  # HTD: 3 z, 4 waves; export: w1..w3
AUTOTX = str(Path(sys.executable).parent / "autotx")


def file_of(plate: Path, well: str, site: int, wave: int, z: int | None = None) -> Path:
    folder = plate / "TimePoint_1" / (f"ZStep_{z}" if z is not None else "")
    return folder / f"9987_{well}_s{site}_w{wave}.TIF"


def test_read_htd_declares_the_acquisition(sampledata):
    htd = read_htd(sampledata / PARTIAL / "9987.HTD")
    assert (htd.name, htd.rows, htd.columns) == ("9987", 8, 12)
    assert htd.wells == ["B02", "B03"] and htd.sites == 2
    assert htd.wavelengths == {1: "DAPI", 2: "FITC", 3: "Texas Red", 4: "Cy5"}
    assert (htd.timepoints, htd.z_steps) == (6, 0)
    assert htd.description.startswith("6t-2w-2s-4c-1z mixed")
    assert read_htd(sampledata / ZSERIES / "9987.HTD").z_steps == 3


def test_partial_export_reads_natively_with_htd_names(sampledata):
    """Bio-Formats 7.3 cannot open this plate at all (see test_readers); we read what is there."""
    plate = sampledata / PARTIAL
    img = open_image(plate / "9987.HTD")
    assert img.name == "imagexpress"
    assert [s.name for s in img.scenes] == ["B02 site 1", "B02 site 2", "B03 site 1", "B03 site 2"]
    assert img.dims.shape == (1, 2, 1, 256, 256)
    assert img.channel_names == ["DAPI", "FITC"]
    assert img.missing_from_export == ["1 of 6 time points", "wavelength(s) w3 Texas Red, w4 Cy5"]
    assert img.missing_planes == []
    plate_info = img.plate
    assert (plate_info.rows, plate_info.columns) == (8, 12)
    assert [(w.name, w.row, w.column, w.fields) for w in plate_info.wells] == [
        ("B02", 1, 1, [0, 1]), ("B03", 1, 2, [2, 3])]
    for scene, (well, site) in enumerate([("B02", 1), ("B02", 2), ("B03", 1), ("B03", 2)]):
        img.set_scene(scene)
        for c, wave in enumerate((1, 2)):
            reference = open_image(file_of(plate, well, site, wave), backend="bioformats",
                                   group_files=False)
            np.testing.assert_array_equal(img.plane(c=c), reference.plane())
            assert img.physical_pixel_sizes == reference.physical_pixel_sizes
            assert img.channels[c].emission_nm == reference.channels[0].emission_nm
            assert img.channel_names[c] == reference.channel_names[0]  # DAPI/FITC both ways
    img.set_scene(0)
    assert img.acquisition_time == open_image(file_of(plate, "B02", 1, 1), backend="bioformats",
                                              group_files=False).acquisition_time
    assert img.objective.numerical_aperture == 0.95 and img.objective.magnification == 40.0


@pytest.mark.parametrize("htd", ["9987.HTD", "TimePoint_1/9987.HTD", "TimePoint_1/ZStep_0/9987.HTD"])
def test_zseries_from_any_copy_of_the_htd(sampledata, htd):
    plate = sampledata / ZSERIES
    img = open_image(plate / htd)
    assert img.name == "imagexpress" and len(img.scenes) == 4
    assert img.dims.shape == (1, 3, 3, 256, 256)
    assert img.channel_names == ["DAPI", "FITC", "Texas Red"]
    assert img.missing_from_export == ["wavelength(s) w4 Cy5"]
    img.set_scene(3)  # B03 site 2
    for c in range(3):
        for z in range(3):
            expected = open_image(file_of(plate, "B03", 2, c + 1, z), backend="bioformats",
                                  group_files=False).plane()
            np.testing.assert_array_equal(img.plane(c=c, z=z), expected)
    assert 2.5 < img.physical_pixel_sizes.Z < 3.5  # from the files' measured z-positions


def test_bioformats_mixes_up_the_zseries_planes(sampledata):
    """Why .HTD is read natively: Bio-Formats 7.3 invents a 4th channel (Cy5, never exported)
    and fills planes from other files. Ours match the files one to one."""
    plate = sampledata / ZSERIES
    bf = open_image(plate / "9987.HTD", backend="bioformats")
    ours = open_image(plate / "9987.HTD")
    assert bf.dims.C == 4 and ours.dims.C == 3
    file_plane = open_image(file_of(plate, "B02", 1, 2, 1), backend="bioformats",
                            group_files=False).plane()
    np.testing.assert_array_equal(ours.plane(c=1, z=1), file_plane)
    assert not np.array_equal(bf.plane(c=1, z=1), file_plane)


def test_conformance(sampledata):
    check_image(open_image(sampledata / ZSERIES / "9987.HTD"), max_planes=4)


@pytest.fixture
def plate_copy(sampledata, tmp_path) -> Path:
    target = tmp_path / "plate"
    shutil.copytree(sampledata / PARTIAL, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def test_a_hole_in_the_grid_names_the_missing_file(plate_copy):
    file_of(plate_copy, "B03", 2, 2).unlink()
    img = open_image(plate_copy / "9987.HTD")
    assert img.missing_planes == ["TimePoint_1/9987_B03_s2_w2.TIF"]
    assert "1 plane(s) inside the exported grid" in img.missing_from_export[-1]
    img.set_scene("B03 site 2")
    assert img.plane(c=0).shape == (256, 256)  # the planes that exist still read
    with pytest.raises(ReaderError, match=r"9987_B03_s2_w2\.TIF is not in the export.*export it "
                                          "again") as info:
        img.plane(c=1)
    assert "\n" not in str(info.value)


def test_thumbnails_and_other_plates_are_not_planes(plate_copy):
    shutil.copy(file_of(plate_copy, "B02", 1, 1), plate_copy / "TimePoint_1" / "9987_B02_s1_w1_thumb.TIF")
    shutil.copy(file_of(plate_copy, "B02", 1, 1), plate_copy / "TimePoint_1" / "1234_B05_s1_w1.TIF")
    names = {f.path.name for f in find_htd_files(plate_copy / "9987.HTD")}
    assert len(names) == 8 and all(n.startswith("9987_B0") and "thumb" not in n for n in names)


def test_htd_without_images_is_a_one_line_error(plate_copy):
    shutil.rmtree(plate_copy / "TimePoint_1")
    with pytest.raises(ReaderError) as info:
        open_image(plate_copy / "9987.HTD")
    text = str(info.value)
    assert "\n" not in text and "no image files named 9987_<well>" in text
    assert "copy the whole plate folder" in text


def test_autotx_info_on_a_plate_folder_then_its_htd(sampledata):
    """The issue's path: info PLATE_DIR advises the .HTD, and the .HTD then works."""
    folder = subprocess.run([AUTOTX, "info", str(sampledata / PARTIAL)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert folder.returncode == 2 and "Traceback" not in folder.stderr
    assert f"open its plate file {sampledata / PARTIAL / '9987.HTD'}" in folder.stderr
    htd = subprocess.run([AUTOTX, "info", str(sampledata / PARTIAL / "9987.HTD")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert htd.returncode == 0, htd.stderr
    assert "backend: imagexpress" in htd.stdout and "channels DAPI (em 452 nm), FITC" in htd.stdout
    assert "partial export: the plate file declares more than the files hold: 1 of 6 time " \
           "points; wavelength(s) w3 Texas Red, w4 Cy5" in htd.stdout


def test_folder_with_the_htd_only_in_timepoint_1(plate_copy):
    (plate_copy / "9987.HTD").unlink()
    with pytest.raises(ReaderError, match=r"open its plate file .*TimePoint_1/9987\.HTD"):
        open_image(plate_copy)
    img = open_image(plate_copy / "TimePoint_1" / "9987.HTD")
    assert img.name == "imagexpress" and len(img.scenes) == 4
