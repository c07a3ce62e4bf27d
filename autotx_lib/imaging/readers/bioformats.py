"""Bio-Formats backend (python-bioformats on javabridge): reads ~160 formats, the universal fallback.

Pixels come back in the file's own dtype (no ``rescale``), one channel per plane
(``ChannelSeparator`` splits RGB), pyramids are not flattened into extra scenes (scene =
Bio-Formats series at full resolution), and multi-file sets (Micro-Manager positions,
CellVoyager plates) are grouped as Bio-Formats groups them. (ImageXpress ``.HTD`` plates
are read natively by :mod:`.htd`: Bio-Formats 7.3 mixes up their planes on partial exports.)

Java exceptions become one-line :class:`~autotx_lib.errors.ReaderError` reasons; nothing
is printed on stderr (see :func:`.jvm.call`).

Axis interpretation: Bio-Formats 7.3 reads a Leica lambda (spectral) sweep as T, with no
marker saying it is a wavelength axis; the readlif backend (tried first for ``.lif``)
reads it as C, which is what a scientist expects. See :mod:`autotx_lib.imaging.readers.lif`.

When Bio-Formats fails on a file because of its companions (a vendor's multi-file set
that it cannot group, e.g. some ImageXpress exports), it retries the file alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers import jvm
from autotx_lib.imaging.readers.base import Image
from autotx_lib.imaging.readers.types import PhysicalPixelSizes

_SUFFIX_TEXT = """1sc 2fl acff afi afm aiix aim aisf al3d ali am amiramesh ano apl arf atsf avi bif bin bip
    bmp btf c01 cfg ch5 cif companion.ome cr2 crw csv cxd czi dat db dcm df3 dib dic dicom dm2
    dm3 dm4 dti dv dv.log env eps epsi ets exp fake fdf fff ffr fits flex fli frm fts gel gif
    grey h5 hdf hdr hed his htd htm html hx i2i ics ids im3 ima img ims inf inr ipl ipm ips ipw
    j2k j2ki j2kr jp2 jpe jpeg jpf jpg jpk jpx klb l2d labels lei lif liff lim lms lof log lsm
    lut map mdb mea mnc mng mod mov mrc mrcs mrw msr mtb mvd2 naf nd nd2 ndpi ndpis nef nhdr nii
    nii.gz nrrd obf oib oif oir ome ome.btf ome.tf2 ome.tf8 ome.tif ome.tiff ome.xml omp2info
    par pattern pbm pcoraw pct pcx pgm pic pict png pnl ppm pr3 ps psd pst pty qptiff r3d
    r3d.log r3d_d3d raw rcpnl rec res scan scn sdt seq set sif sld sldy sm2 sm3 spc spe spi spl
    st stk stp svs sxm tf2 tf8 tfr tga thm tif tiff tim tnb top txt v vff vms vsi vws wat wav
    wpi xdce xlef xlog xml xqd xqf xv xys zfp zfr zip zpo zvi"""
#: Suffixes Bio-Formats 7.3 claims (``ImageReader.getSuffixes()``), lower case.
BIOFORMATS_SUFFIXES: tuple[str, ...] = tuple(_SUFFIX_TEXT.split())

# loci.formats.FormatTools pixel types -> numpy
_PIXEL_TYPES = {0: "i1", 1: "u1", 2: "i2", 3: "u2", 4: "i4", 5: "u4", 6: "f4", 7: "f8", 8: "u1"}


def _one_line(error: BaseException) -> str:
    """A one-line reason from a Java call's error, never ``<Java object at 0x...>``."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__) + " (in Bio-Formats)"


class BioformatsReader(Image):
    """Read any format Bio-Formats knows, through python-bioformats and javabridge.

    Parameters
    ----------
    path : str or Path
        The file.
    group_files : bool, optional
        Let Bio-Formats read the file as part of its multi-file set (default True). False
        reads this one file only, e.g. one TIFF of an ImageXpress plate.

    Notes
    -----
    One Java reader per :class:`Image`; calls to it are serialised by the base's lock and
    run inside :func:`autotx_lib.imaging.readers.jvm.attached`, so any thread (dask's
    included) can read. The JVM starts on the first open (see :mod:`.jvm`).
    """

    name = "bioformats"
    extensions = BIOFORMATS_SUFFIXES

    def _open(self) -> None:
        if not self.path.exists() and self.path.suffix.lower() != ".fake":
            raise ReaderError(self.path, {self.name: "no such file"})
        jvm.start_jvm()
        import javabridge

        self._jb = javabridge
        with jvm.attached():
            try:
                self._setup(group_files=bool(self.options.get("group_files", True)))
            except jvm.JavaCallError as grouped_error:
                try:  # a vendor set it cannot group (some ImageXpress exports): the file alone
                    self._setup(group_files=False)
                except jvm.JavaCallError:
                    raise ReaderError(
                        self.path, {self.name: _one_line(grouped_error)}
                    ) from None
            self._format = self._jcall(self._base_reader, "getFormat", "()Ljava/lang/String;")
            self._series = self._full_resolution_series()
            self._image_count = int(self._meta("getImageCount", "()I"))

    def _setup(self, *, group_files: bool) -> None:
        """Create the Java reader chain and open the file (inside ``jvm.attached()``)."""
        javabridge = self._jb
        store = javabridge.static_call(
            "loci/formats/MetadataTools", "createOMEXMLMetadata",
            "()Lloci/formats/meta/IMetadata;",
        )
        reader = javabridge.make_instance("loci/formats/ImageReader", "()V")
        jvm.call(reader, "setGroupFiles", "(Z)V", group_files)
        jvm.call(reader, "setMetadataStore", "(Lloci/formats/meta/MetadataStore;)V", store)
        separator = javabridge.make_instance(
            "loci/formats/ChannelSeparator", "(Lloci/formats/IFormatReader;)V", reader
        )
        jvm.call(separator, "setId", "(Ljava/lang/String;)V", str(self.path))
        self._store = store
        self._reader = separator
        self._base_reader = reader

    def _full_resolution_series(self) -> list[int]:
        """Series that are scenes: pyramid sub-resolutions (flattened by default) are skipped.

        (Unflattened mode would be simpler, but Bio-Formats 7.3 then merges the differently
        sized scenes of some CZI files into one series.)
        """
        count = int(self._call("getSeriesCount", "()I"))
        core = self._call("getCoreMetadataList", "()Ljava/util/List;")
        bases, index = [], 0
        while index < count:
            bases.append(index)
            entry = self._jcall(core, "get", "(I)Ljava/lang/Object;", index)
            step = int(self._jb.get_field(entry, "resolutionCount", "I")) if entry is not None else 1
            index += max(step, 1)
        return bases

    def _ome_index(self, scene: int) -> int:
        """OME Image index of a scene (the store lists every series, or only full ones)."""
        series = self._series[scene]
        return series if self._image_count > len(self._series) else scene

    def _ome_image(self, scene: int) -> Any:
        images = self._ome_summary().images
        index = self._ome_index(scene)
        return images[index] if index < len(images) else None

    # --- java helpers -------------------------------------------------------------------

    def _jcall(self, obj: Any, method: str, signature: str, *args: Any) -> Any:
        try:
            return jvm.call(obj, method, signature, *args)
        except jvm.JavaCallError as error:
            raise ReaderError(self.path, {self.name: f"{method}: {_one_line(error)}"}) from None

    def _call(self, method: str, signature: str, *args: Any) -> Any:
        return self._jcall(self._reader, method, signature, *args)

    def _meta(self, method: str, signature: str, *args: Any) -> Any:
        return self._jcall(self._store, method, signature, *args)

    def _select(self, scene: int) -> None:
        series = self._series[scene]
        if self._call("getSeries", "()I") != series:
            self._call("setSeries", "(I)V", series)

    # --- hooks --------------------------------------------------------------------------

    def _scene_list(self) -> list[tuple[str, str]]:
        with jvm.attached():
            out = []
            for scene in range(len(self._series)):
                sid = name = None
                index = self._ome_index(scene)
                if index < self._image_count:
                    sid = self._meta("getImageID", "(I)Ljava/lang/String;", index)
                    name = self._meta("getImageName", "(I)Ljava/lang/String;", index)
                out.append((sid or f"Image:{scene}", name or ""))
            return out

    def _scene_sizes(self, scene: int) -> dict[str, int]:
        with jvm.attached():
            self._select(scene)
            sizes = {
                axis: int(self._call(f"getSize{axis}", "()I")) for axis in "TCZYX"
            }
            return sizes

    def _scene_dtype(self, scene: int) -> np.dtype:
        with jvm.attached():
            self._select(scene)
            pixel_type = int(self._call("getPixelType", "()I"))
            if pixel_type not in _PIXEL_TYPES:
                raise ReaderError(self.path, {self.name: f"unknown Bio-Formats pixel type {pixel_type}"})
            self._little = {**getattr(self, "_little", {}), scene: bool(self._call("isLittleEndian", "()Z"))}
            return np.dtype(_PIXEL_TYPES[pixel_type])

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        dims = self._dims(scene)
        dtype = self._dtype_of(scene)
        with jvm.attached():
            self._select(scene)
            index = self._call("getIndex", "(III)I", z, c, t)
            raw = self._call("openBytes", "(I)[B", index)
        order = "<" if self._little.get(scene, True) else ">"
        plane = np.frombuffer(bytes(raw) if not isinstance(raw, np.ndarray) else raw,
                              dtype=dtype.newbyteorder(order))
        return plane.reshape(dims.Y, dims.X).astype(dtype, copy=False)

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        with jvm.attached():
            micrometre = self._jb.get_static_field(
                "ome/units/UNITS", "MICROMETER", "Lome/units/unit/Unit;"
            )

            def size(axis: str) -> float | None:
                length = self._meta(
                    f"getPixelsPhysicalSize{axis}", "(I)Lome/units/quantity/Length;",
                    self._ome_index(scene),
                )
                if length is None:
                    return None
                number = self._jcall(
                    length, "value", "(Lome/units/unit/Unit;)Ljava/lang/Number;", micrometre
                )
                return None if number is None else float(self._jcall(number, "doubleValue", "()D"))

            return PhysicalPixelSizes(size("Z"), size("Y"), size("X"))

    def _channel_names(self, scene: int) -> list[str] | None:
        dims = self._dims(scene)
        index = self._ome_index(scene)
        with jvm.attached():
            if index >= self._image_count or self._meta("getChannelCount", "(I)I", index) < dims.C:
                return None  # the store describes fewer channels: none are named
            names = [self._meta("getChannelName", "(II)Ljava/lang/String;", index, c)
                     for c in range(dims.C)]
        return names if all(names) else None

    def _ome_xml(self) -> str | None:
        with jvm.attached():
            return self._meta("dumpXML", "()Ljava/lang/String;")

    def _raw_metadata(self) -> Any:
        return {"format": self._format, "series": list(self._series)}

    def _close(self) -> None:
        with jvm.attached():
            self._call("close", "()V")

    @property
    def format_name(self) -> str:
        """str : Bio-Formats' name of the file format (``"Zeiss CZI"``, ``"OME-TIFF"``...)."""
        return self._format

