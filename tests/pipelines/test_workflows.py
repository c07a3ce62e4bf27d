"""The built-in workflows, run by the engine on a real dask cluster over real files."""

from __future__ import annotations

import numpy as np
import pytest

from autotx_lib.journal import Journal
from autotx_lib.pipelines import log as runlog
from autotx_lib.pipelines.engine import PipelineEngine
from tests.pipelines.conftest import delivered_dataset, pipeline_config

tifffile = pytest.importorskip("tifffile", reason="the imaging extra is needed")


def _cells(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.poisson(300, (96, 96)).astype(np.uint16)
    for _ in range(12):
        y, x = rng.integers(8, 88, 2)
        image[y - 4:y + 4, x - 4:x + 4] += 3000
    return image


@pytest.fixture
def plate_setup(tmp_path, dask_client):
    config = pipeline_config(tmp_path, rules=[{"workflow": "plate-qc", "plate": True}])
    config = config.model_copy(update={"email": config.email.model_copy(update={
        "smtp_host": "127.0.0.1", "user_address_pattern": "{user}@example.org"})})
    journal = Journal(config.journal_url)
    files = {}
    for index, well in enumerate(("A01", "A02", "B01", "B02")):
        for site in (1, 2):
            image = _cells(index * 2 + site)
            if (well, site) == ("B02", 2):
                image = (image // 40).astype(np.uint16)  # a dark image
            files[f"P9_{well}_s{site}_w1.tif"] = image
    row = delivered_dataset(config, journal, "plate9", {name: b"" for name in files})
    for name, image in files.items():
        tifffile.imwrite(f"{row.dest_path}/{name}", image)
    engine = PipelineEngine(config, journal, client=dask_client)
    yield config, journal, engine, row
    engine.stop()


def test_plate_qc_writes_report_and_csv_beside_the_data_flags_wells_and_mails_the_user(
        plate_setup):
    config, journal, engine, row = plate_setup
    run_id = engine.record("plate-qc", row.dest_path, dataset_id=row.id, initiator="scope-1")
    engine.run_until_idle(timeout_s=120)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "finished", detail["error"]
    results = detail["results"]
    assert results["images"] == 8 and results["wells"] == 4 and results["vendor"] == \
        "imagexpress"
    assert results["flagged_wells"] == ["B02"] and results["usable"] is False
    assert results["verdicts"] == {"ok": 7, "dark": 1}
    folder = config.managed / "results" / "alice" / "plate9" / str(run_id)
    assert results["report"] == str(folder / "plate_qc.html")
    assert "B02" in (folder / "plate_qc.html").read_text()
    assert len((folder / "plate_qc.csv").read_text().splitlines()) == 9
    assert detail["steps"]["name"].tolist() == ["discover plate", "measure", "report"]
    mail = journal.pending_mail()[0]
    assert mail.recipient == "alice@example.org"
    assert "Plate QC of plate9: 1 wells flagged" in mail.subject
    assert "Wells to look at: B02" in mail.body and "dark: 1" in mail.body
    # nothing was written into the delivered (manifested) folder
    assert sorted(p.name for p in (config.destination / "alice" / "plate9").iterdir()) == \
        sorted(f"P9_{w}_s{s}_w1.tif" for w in ("A01", "A02", "B01", "B02") for s in (1, 2))


def test_plate_qc_on_a_folder_that_is_no_plate_is_a_clear_error(plate_setup, tmp_path):
    config, journal, engine, row = plate_setup
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    run_id = engine.record("plate-qc", tmp_path / "notes")
    engine.run_until_idle(timeout_s=60)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error" and "PlateNotFoundError" in detail["error"]
    assert detail["steps"]["status"].tolist() == ["error"]


def test_previews_one_png_and_thumbnail_per_scene(tmp_path, dask_client, sampledata):
    config = pipeline_config(tmp_path)
    journal = Journal(config.journal_url)
    engine = PipelineEngine(config, journal, client=dask_client)
    source = tmp_path / "alice" / "stacks"
    source.mkdir(parents=True)
    for name in ("zstack/pycudadecon_psf_bead_LLS.tif",
                 "ome-tiff/ome_sample_multi-channel.ome.tif"):
        (source / name.split("/")[1]).symlink_to(sampledata / name)
    (source / "broken.tif").write_bytes(b"not a tiff")
    run_id = engine.record("previews", source)
    engine.run_until_idle(timeout_s=120)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "finished", detail["error"]
    results = detail["results"]
    assert (results["images"], results["previews"], results["unreadable"]) == (3, 2, 1)
    assert results["unreadable_files"][0].startswith("broken.tif: ")
    out = config.managed / "results" / "alice" / "stacks" / str(run_id) / "previews"
    import imagecodecs

    big = imagecodecs.png_decode((out / "pycudadecon_psf_bead_LLS.tif.png").read_bytes())
    thumb = imagecodecs.png_decode((out / "pycudadecon_psf_bead_LLS.tif_thumb.png").read_bytes())
    assert big.ndim == 3 and big.shape[2] == 3 and big.max() == 255  # stretched
    assert max(thumb.shape[:2]) <= 128
    assert (out / "ome_sample_multi-channel.ome.tif.png").exists()
    engine.stop()


def test_omero_import_without_the_agents_configuration_says_what_to_give(tmp_path,
                                                                          dask_client,
                                                                          monkeypatch):
    monkeypatch.delenv("AUTOTX_CONFIG", raising=False)
    config = pipeline_config(tmp_path)
    journal = Journal(config.journal_url)
    engine = PipelineEngine(config, journal, client=dask_client)
    run_id = engine.record("omero-import", tmp_path)
    engine.run_until_idle(timeout_s=60)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error"
    assert 'give params {config = "/path/autotx.toml"} or set AUTOTX_CONFIG' in detail["error"]
    engine.stop()
