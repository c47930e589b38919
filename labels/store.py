"""The dataset store: the on-disk contract between the stages and with users.

It only stores: it lays out, encodes and atomically writes what it is given, and reads it back
(what goes into a frame is derived by ``labels.annotate``). Layout and meaning of every file are
in docs/formats.md. Each file is written to a temporary name and renamed into place; a frame's
record, with each file's size and CRC-32, is appended to ``frames.jsonl`` only after all of its
files exist, so an interrupted run leaves no half-written frame that counts as done. One process
at a time writes a store (``one_writer``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import cv2
import numpy as np
import OpenEXR

from sceneforge.floor.errors import StorageError, UserError
from sceneforge.floor.files import LockHeld, atomic_write, folder_lock
from sceneforge.floor.frame import BEHIND_PASSES, FLOW_PASSES, FRAME_PASSES, STEREO_PASSES, STORED_PASSES

STORE_FORMAT = "sceneforge.store/1"
# Text documents of a frame, beside its passes: the SceneSpec and, optionally, its USD stage.
DOCUMENTS = {"scene": "scenes/{stem}.json", "usd": "scenes/{stem}.usda"}
MAX_METADATA_BYTES = 64 << 20
MAX_RECORD_BYTES = 64 << 20
MAX_TRACKS_BYTES = 1 << 30
# Arrays of a sequence's point-track file (docs/formats.md) and their dtypes.
TRACK_ARRAYS = {"query_points": "float32", "tracks": "float32", "occluded": "bool", "instance_id": "int32"}

log = logging.getLogger("sceneforge")


@contextlib.contextmanager
def one_writer(folder: str | Path) -> Iterator[None]:
    """Be the only SceneForge process writing ``folder`` (a store or an export) for the block.

    Another process holding it is a UserError naming it (pid, host, command, since when); the
    lock dies with its holder, so a killed run never leaves a stale one.
    """
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lock = folder_lock(Path(folder), holder)
    try:  # taken here, not in a with-block: only taking it may become these errors, not the writing
        lock.__enter__()
    except OSError as exc:
        raise UserError(f"{folder}: output folder is not writable (its writer lock beside it: "
                        f"{exc.strerror or exc})") from None
    except LockHeld as exc:
        other = exc.holder
        who = (f"pid {other.get('pid')} on {other.get('host')}, '{other.get('command')}', since {other.get('since')}"
               if other else "another process")
        raise UserError(f"{folder}: another SceneForge process is writing here ({who}); wait for it to finish "
                        "or stop it, then rerun") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def parse_record(line: bytes) -> dict:
    """One line of frames.jsonl as a record; a ValueError if it is not one."""
    if len(line) > MAX_RECORD_BYTES:
        raise ValueError("record too large")
    record = json.loads(line)
    if not isinstance(record, dict) or not isinstance(record.get("index"), int) or not isinstance(record.get("files"), dict):
        raise ValueError("not a frame record (index and files)")
    return record


def frame_name(index: int) -> str:
    """The file stem of frame ``index`` (000042)."""
    return f"{index:06d}"


def tracks_file(scene_index: int, camera: str = "") -> str:
    """Where a sequence's point tracks (seen by rig camera ``camera``) lie in a store (relative)."""
    return f"tracks/{view_stem(scene_index, camera)}.npz"


def view_stem(index: int, camera: str = "") -> str:
    """The file stem of one view of frame ``index``: ``000042``, or ``000042_left`` for rig camera ``left``."""
    return f"{frame_name(index)}_{camera}" if camera else frame_name(index)


def pass_file(name: str, index: int, camera: str = "") -> str:
    """Where pass ``name`` of frame ``index`` (as rig camera ``camera`` saw it; "" for a single
    camera) is kept, relative to the store: ``depth/000042.exr``, ``depth/000042_left.exr``."""
    return f"{name}/{view_stem(index, camera)}{STORED_PASSES[name].suffix}"


def view_name(record: dict) -> str:
    """The camera name of a frame record ("" for a single camera, and in stores made before rigs)."""
    return record["camera"].get("name", "") if isinstance(record.get("camera"), dict) else ""


def view_key(record: dict) -> tuple[int, str]:
    """What identifies a record in frames.jsonl: (frame index, camera name)."""
    return record["index"], view_name(record)


def frames_of(records: list[dict]) -> list[list[dict]]:
    """Records grouped by frame (the views of one index together), in the order given."""
    frames: dict[int, list[dict]] = {}
    for record in records:
        frames.setdefault(record["index"], []).append(record)
    return list(frames.values())


class DatasetStore:
    """A SceneForge dataset folder: ``dataset.json``, ``frames.jsonl`` and one folder per pass.

    It only reads and writes files: what goes into them is derived elsewhere (``labels.annotate``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise UserError(f"{self.root}: not a SceneForge dataset (no dataset.json)")
        self.meta = _read_json(meta_path, MAX_METADATA_BYTES)
        if self.meta.get("format") != STORE_FORMAT:
            raise UserError(f"{meta_path}: unsupported store format {self.meta.get('format')!r}, expected {STORE_FORMAT!r}")

    @property
    def cameras(self) -> list[str]:
        """The names of each frame's views in rig order ([""]: one unnamed camera)."""
        return [c["name"] for c in self.meta.get("cameras", [])] or [""]

    def image_id(self, record: dict) -> int:
        """A unique integer id of a view: ``index * cameras + camera position`` (the index itself
        for a single camera), as COCO's image ids."""
        cameras = self.cameras
        return record["index"] * len(cameras) + cameras.index(view_name(record))

    @classmethod
    def open_for_writing(
        cls, root: str | Path, *, recipe: dict, recipe_hash: str, categories: list[str],
        resolution: tuple[int, int], requested: int, albedo: bool = False, flow: bool = False,
        sensor: bool = False, depth_sensor: bool = False, behind: bool = False,
        keypoints: Mapping[str, tuple[Sequence[str], Sequence[tuple[str, str]]]] | None = None,
        cameras: tuple[str, ...] = ("",), stereo_pairs: tuple[tuple[str, str], ...] = (),
    ) -> DatasetStore:
        """Create a store, or reopen one made from the same recipe to resume it (``albedo``,
        ``flow``: frames also hold those passes; ``sensor``: ``rgb_clean``, ``depth_sensor``: that
        pass; ``behind``: ``depth_behind`` and ``instance_behind``; ``keypoints``: each category's keypoint names and skeleton, as name pairs;
        ``cameras``: the names of a rig's views, with ``stereo_pairs`` (left, right) of them;
        ``requested`` counts views)."""
        root = Path(root)
        _check_writable(root)
        meta_path = root / "dataset.json"
        if not meta_path.exists():
            meta = {
                "format": STORE_FORMAT,
                "recipe": recipe,
                "recipe_hash": recipe_hash,
                "categories": [{"id": i + 1, "name": name, **_keypoint_fields(*(keypoints or {}).get(name, ((), ())))}
                               for i, name in enumerate(categories)],
                "passes": [*FRAME_PASSES, *(["albedo"] if albedo else []), *(FLOW_PASSES if flow else ()),
                           *(STEREO_PASSES if stereo_pairs else ()),
                           *(["rgb_clean"] if sensor else []), *(["depth_sensor"] if depth_sensor else []),
                           *(BEHIND_PASSES if behind else ())],
                "resolution": list(resolution),
                "conventions": {
                    "camera": "opencv: +x right, +y down, +z forward; K pixel centres at integers",
                    "depth": "planar z along the camera axis, metres, inf = no hit",
                    "distance": "euclidean distance from the camera centre, metres, inf = no hit",
                    "normals": "unit vectors in the opencv camera frame, 0 = no hit",
                    "depth_sensor": "planar z a depth sensor measures (noise, quantisation), metres, 0 = hole",
                    "rgb_clean": "the render without the sensor model; rgb is what the sensor saw",
                    "see_through": "labels take the first surface that is not wholly transparent (cut-out holes "
                                   "show what is behind); glass and blended surfaces are surfaces; depth_behind/"
                                   "instance_behind: the same ray without glass and blended bodies",
                    "flow": "pixels (dx, dy) to the point's position in the next/previous frame; "
                            "flow_valid bit 1 forward, bit 2 backward",
                    "keypoints": "objects[].keypoints: [u, v, visibility] in the category's keypoint order, pixel "
                                 "centres at integers; 0 outside the image or behind the camera, 1 occluded, 2 visible; "
                                 "categories[].skeleton: 0-based pairs of keypoint indices",
                },
            }
            if tuple(cameras) != ("",):
                meta["cameras"] = [{"name": name} for name in cameras]
                meta["stereo_pairs"] = [{"left": left, "right": right} for left, right in stereo_pairs]
                meta["conventions"]["disparity"] = ("fx * baseline / depth in pixels, 0 = no hit; the left view's "
                                                    "(u, v) is at (u - d, v) in the right view, the right's at (u + d, v) "
                                                    "in the left")
            atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, allow_nan=False)))
        store = cls(root)
        if store.meta.get("recipe_hash") != recipe_hash:
            raise UserError(
                f"{root}: holds frames of another recipe (recipe hash {store.meta.get('recipe_hash')}, "
                f"this one is {recipe_hash}); choose another output folder"
            )
        for folder in (*store.meta["passes"], "scenes", "tracks"):
            (root / folder).mkdir(exist_ok=True)
        store._remove_partial_files()
        store.meta["recipe"] = recipe  # the same hash: only the frame count can differ
        store.meta["counts"] = {"requested": requested, "finished": len(store._drop_damaged_frames())}
        store.meta["software"] = _software_versions()
        store.save_metadata()
        return store

    # --- reading -----------------------------------------------------------------------------

    def records(self, repair: bool = False) -> list[dict]:
        """Finished view records (one per frame and camera), by index then rig camera order. A
        truncated last line (a crash mid-append) is skipped with a warning, and cut off the file
        when ``repair`` is set."""
        path = self.root / "frames.jsonl"
        if not path.exists():
            return []
        data = path.read_bytes()
        lines = data.split(b"\n")
        by_view: dict[tuple[int, str], dict] = {}
        good_end = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                good_end += len(line) + 1
                continue
            try:
                record = parse_record(line)
            except ValueError as exc:
                if number == len(lines):  # last line without its newline: an interrupted append
                    log.warning("%s:%d: ignoring a truncated last record (%s)", path, number, exc)
                    break
                raise UserError(f"{path}:{number}: corrupt frame record ({exc})") from None
            by_view.setdefault(view_key(record), record)
            good_end += len(line) + 1
        if repair and good_end < len(data):
            with open(path, "r+b") as f:
                f.truncate(min(good_end, len(data)))
        order = {name: k for k, name in enumerate(self.cameras)}
        return [by_view[key] for key in sorted(by_view, key=lambda key: (key[0], order.get(key[1], len(order)), key[1]))]

    def failures(self) -> list[dict]:
        """The views the last run gave up on (``failed.jsonl``: index, camera, error, attempts);
        [] when there are none. A line that is not a JSON object is a located UserError."""
        path = self.root / "failed.jsonl"
        if not path.exists():
            return []
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise UserError(f"{path}: larger than {MAX_RECORD_BYTES} bytes")
        failures = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                failure = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{path}:{number}: corrupt failure record ({exc})") from None
            if not isinstance(failure, dict):
                raise UserError(f"{path}:{number}: corrupt failure record (not a JSON object)")
            failures.append(failure)
        return failures

    def frame_problem(self, record: dict, checksums: bool = True) -> str | None:
        """What is wrong with a finished frame's files (None: nothing): a file its record names is
        missing, or differs in size or (with ``checksums``) CRC-32 from what the record says."""
        checks = record.get("checks", {})
        for name, relative in record["files"].items():
            path = self.root / relative
            if not path.is_file():
                return f"{relative} is missing"
            expected = checks.get(name)
            if expected is None:
                continue
            if (size := path.stat().st_size) != expected["bytes"]:
                return f"{relative} has {size} bytes, the record says {expected['bytes']}"
            if checksums and file_check(path)["crc32"] != expected["crc32"]:
                return f"{relative} is damaged (its CRC-32 differs from the record's)"
        return None

    def path(self, record: dict, name: str) -> Path:
        """Absolute path of one of a frame's files (``rgb``, ``depth``, ..., ``scene``)."""
        return self.root / record["files"][name]

    def read_rgb(self, record: dict, name: str = "rgb") -> np.ndarray:
        """H x W x 3 uint8 RGB of a colour pass (``rgb``, ``albedo``, ``rgb_refined``, ``rgb_clean``)."""
        return cv2.cvtColor(_imread(self.path(record, name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def read_instance(self, record: dict) -> np.ndarray:
        """H x W uint16 instance ids (0 = background)."""
        return _imread(self.path(record, "instance"), cv2.IMREAD_UNCHANGED)

    def read_semantic(self, record: dict) -> np.ndarray:
        """H x W uint16 category ids (0 = background)."""
        return _imread(self.path(record, "semantic"), cv2.IMREAD_UNCHANGED)

    def read_depth(self, record: dict) -> np.ndarray:
        """H x W float32 planar depth in metres (inf = no hit)."""
        return self._read_z(record, "depth")

    def read_distance(self, record: dict) -> np.ndarray:
        """H x W float32 Euclidean distance from the camera centre in metres (inf = no hit)."""
        return self._read_z(record, "distance")

    def read_depth_sensor(self, record: dict) -> np.ndarray:
        """H x W float32 depth the depth sensor model measured, metres (0 = hole)."""
        return self._read_z(record, "depth_sensor")

    def read_disparity(self, record: dict) -> np.ndarray:
        """H x W float32 stereo disparity in pixels of a stereo view (0 = no hit; docs/formats.md)."""
        return self._read_z(record, "disparity")

    def read_pass(self, record: dict, name: str) -> np.ndarray:
        """Any pass of ``STORED_PASSES`` as its dtype: H x W x 3 colour, H x W ids or one float
        channel, H x W x C vectors."""
        channels = STORED_PASSES[name].channels
        if channels == "RGB":
            return self.read_rgb(record, name)
        if channels == "":
            return _imread(self.path(record, name), cv2.IMREAD_UNCHANGED)
        return self._read_z(record, name) if channels == "Z" else self._read_vectors(record, name)

    def _read_z(self, record: dict, name: str) -> np.ndarray:
        return OpenEXR.File(str(self.path(record, name))).channels()["Z"].pixels

    def read_normals(self, record: dict) -> np.ndarray:
        """H x W x 3 float32 camera-frame (OpenCV) unit normals."""
        return self._read_vectors(record, "normals")

    def _read_vectors(self, record: dict, name: str) -> np.ndarray:
        """H x W x C float32 of a vector pass, its channels (``STORED_PASSES``) stacked in order."""
        channels = OpenEXR.File(str(self.path(record, name)), separate_channels=True).channels()
        return np.stack([channels[c].pixels for c in STORED_PASSES[name].channels], axis=-1)

    def read_flow(self, record: dict, name: str) -> np.ndarray:
        """H x W x 2 float32 flow of ``flow_forward`` or ``flow_backward`` (pixels, dx and dy)."""
        return self._read_vectors(record, name)

    def read_flow_valid(self, record: dict) -> np.ndarray:
        """H x W uint8 flow validity bits (1 forward, 2 backward)."""
        return _imread(self.path(record, "flow_valid"), cv2.IMREAD_UNCHANGED)

    def sequence_records(self) -> list[dict]:
        """Records of the sequences whose point tracks are written, by scene index (and rig camera:
        a rig's records carry ``camera``, the camera's name)."""
        path = self.root / "sequences.jsonl"
        if not path.exists():
            return []
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise UserError(f"{path}: larger than {MAX_RECORD_BYTES} bytes")
        records = {}
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("scene_index"), int) \
                        or not isinstance(record.get("files"), dict):
                    raise ValueError("not a sequence record (scene_index and files)")
            except ValueError as exc:
                if number == len(lines):  # an interrupted append: that sequence's tracks are written again
                    break
                raise UserError(f"{path}:{number}: corrupt sequence record ({exc})") from None
            records.setdefault((record["scene_index"], record.get("camera", "")), record)
        return [records[k] for k in sorted(records)]

    def read_tracks(self, record: dict) -> dict[str, np.ndarray]:
        """A sequence's point tracks (``TRACK_ARRAYS``; docs/formats.md), read without pickle."""
        path = self.root / record["files"]["tracks"]
        if path.stat().st_size > MAX_TRACKS_BYTES:
            raise UserError(f"{path}: larger than {MAX_TRACKS_BYTES} bytes")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in TRACK_ARRAYS}
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"{path}: not a point-track file ({exc})") from None
        for name, dtype in TRACK_ARRAYS.items():
            if arrays[name].dtype != np.dtype(dtype):
                raise UserError(f"{path}: {name} is {arrays[name].dtype}, expected {dtype}")
        return arrays

    # --- writing -----------------------------------------------------------------------------

    def write_frame_files(self, index: int, passes: dict[str, np.ndarray], documents: dict[str, str],
                          camera: str = "") -> tuple[dict[str, str], dict[str, dict]]:
        """Write a view's passes and documents (each atomically; ``camera``: the rig camera's name,
        "" for a single camera); returns their relative paths and their checks (``{"bytes": size,
        "crc32": hex}`` by name), for the view's record.

        ``passes`` maps names of ``STORED_PASSES`` to arrays of its dtype, ``documents`` names of
        ``DOCUMENTS`` to text. Any process that sees the store's folder may call this; only one
        appends the records. A failed write raises StorageError.
        """
        files = {name: pass_file(name, index, camera) for name in passes}
        files.update({name: DOCUMENTS[name].format(stem=view_stem(index, camera)) for name in documents})
        try:
            for name, array in passes.items():
                _write_pass(self.root / files[name], STORED_PASSES[name].channels, array)
            for name, text in documents.items():
                atomic_write(self.root / files[name], lambda tmp: tmp.write_text(text))
            checks = {name: file_check(self.root / relative) for name, relative in files.items()}
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot write frame {index} ({exc.strerror or exc})") from None
        return files, checks

    def storage_error(self, error: str) -> StorageError:
        """A StorageError saying what failed (``error``) and that the finished frames are intact."""
        done = self.meta["counts"]["finished"]
        return StorageError(f"{error}; the {done} frame(s) already finished are intact: "
                            "fix the output and rerun the same command")

    def save_metadata(self) -> None:
        """Rewrite dataset.json atomically."""
        text = json.dumps(self.meta, indent=2, allow_nan=False)
        atomic_write(self.root / "dataset.json", lambda tmp: tmp.write_text(text))

    def append_record(self, record: dict) -> None:
        """Mark a frame finished: its record becomes one line of frames.jsonl (one write)."""
        try:
            _append_line(self.root / "frames.jsonl", record)
        except OSError as exc:
            raise self.storage_error(f"{self.root}: cannot write frame {record['index']}"
                                     f"{' camera ' + view_name(record) if view_name(record) else ''} "
                                     f"({exc.strerror or exc})") from None
        self.meta["counts"]["finished"] += 1

    def write_colour(self, name: str, index: int, rgb: np.ndarray, camera: str = "") -> None:
        """Write a view's 8-bit RGB image of pass ``name`` to ``pass_file(name, index, camera)`` (atomically)."""
        _write_pass(self.root / pass_file(name, index, camera), "RGB", rgb)

    def record_pass(self, name: str, meta: dict) -> None:
        """Add pass ``name`` (``pass_file(name, index, camera)``, written by ``write_colour``) to every
        finished view's files, and ``meta`` to dataset.json; frames.jsonl is rewritten atomically."""
        records = self.records()
        for record in records:
            record["files"][name] = relative = pass_file(name, record["index"], view_name(record))
            record.setdefault("checks", {})[name] = file_check(self.root / relative)
        self.rewrite_records(records)
        if name not in self.meta["passes"]:
            self.meta["passes"].append(name)
        self.meta.update(meta)
        self.save_metadata()

    def write_sequence(self, scene_index: int, frames: list[int], fps: float, tracks: dict[str, np.ndarray],
                       camera: str = "") -> dict:
        """Write a sequence's point tracks as rig camera ``camera`` sees them ("" for a single
        camera; atomically) and append its record to sequences.jsonl."""
        relative = tracks_file(scene_index, camera)
        path = self.root / relative
        arrays = {name: np.asarray(tracks[name], dtype=dtype) for name, dtype in TRACK_ARRAYS.items()}
        record = {"scene_index": scene_index, **({"camera": camera} if camera else {}), "frames": frames, "fps": fps,
                  "files": {"tracks": relative}}
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as out:
                np.savez_compressed(out, **arrays)

        try:
            atomic_write(path, write)
            record["checks"] = {"tracks": file_check(path)}
            _append_line(self.root / "sequences.jsonl", record)
        except OSError as exc:
            raise self.storage_error(f"{self.root}: cannot write the tracks of sequence {scene_index} "
                                     f"({exc.strerror or exc})") from None
        return record

    def rewrite_sequence_records(self, records: list[dict]) -> None:
        """Replace sequences.jsonl with these records (atomically; removed when there are none)."""
        path = self.root / "sequences.jsonl"
        if not records:
            path.unlink(missing_ok=True)
            return
        atomic_write(path, lambda tmp: tmp.write_text(_json_lines(records)))

    def write_failures(self, failures: list[dict]) -> None:
        """Replace failed.jsonl with this run's failures (removed when there are none)."""
        path = self.root / "failed.jsonl"
        if not failures:
            path.unlink(missing_ok=True)
            return
        text = "".join(json.dumps(f, allow_nan=False) + "\n" for f in failures)
        atomic_write(path, lambda tmp: tmp.write_text(text))

    def _drop_damaged_frames(self) -> list[dict]:
        """Keep only the records whose files are all there with their recorded sizes (frames.jsonl
        rewritten atomically when some are not): the run renders the others again."""
        records, intact = self.records(repair=True), []
        for record in records:
            if (problem := self.frame_problem(record, checksums=False)) is None:
                intact.append(record)
            else:
                log.warning("%s: frame %d%s will be rendered again: %s", self.root, record["index"],
                            f" camera {view_name(record)}" if view_name(record) else "", problem)
        if len(intact) < len(records):
            self.rewrite_records(intact)
        return intact

    def rewrite_records(self, records: list[dict]) -> None:
        """Replace frames.jsonl with these records (atomically)."""
        atomic_write(self.root / "frames.jsonl", lambda tmp: tmp.write_text(_json_lines(records)))

    def _remove_partial_files(self) -> None:
        for folder in (*self.meta["passes"], "scenes", "scenes/textures"):  # textures: the USD stages' maps
            for tmp in (self.root / folder).glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def accepted_frames(records: list[dict], rgb: str, include_rejected: bool = False) -> list[dict]:
    """The frames an export (every format, and the PyTorch Dataset) keeps for RGB source ``rgb``: with the refined images, not those whose refinement the
    acceptance check rejected (``refine_rejected`` in the record; docs/refiner.md), unless
    ``include_rejected``. The renders of rejected frames are sound: other sources keep every frame."""
    if rgb != "refined" or include_rejected:
        return records
    return [record for record in records if not record.get("refine_rejected")]


def rejection_summary(records: list[dict]) -> dict | None:
    """How many refined views the acceptance check scored and rejected, and the rate (None when
    none was scored); ``refine eval`` and the report show it."""
    scored = [r for r in records if "refine_scores" in r]
    if not scored:
        return None
    rejected = sum(1 for r in scored if r.get("refine_rejected"))
    return {"scored": len(scored), "rejected": rejected, "rejection_rate": rejected / len(scored)}


def _json_lines(records: list[dict]) -> str:
    """Records as JSON lines, compact and strict (no NaN or infinity)."""
    return "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in records)


def _append_line(path: Path, record: dict) -> None:
    """Append one record as a JSON line in one append-mode write (retried until all bytes are out)."""
    view = memoryview(_json_lines([record]).encode())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def file_check(path: Path) -> dict:
    """A file's size and CRC-32 (hex), as frame records keep them."""
    data = path.read_bytes()
    return {"bytes": len(data), "crc32": f"{zlib.crc32(data):08x}"}


def _keypoint_fields(names: Sequence[str], skeleton: Sequence[tuple[str, str]]) -> dict:
    """A category's ``keypoints`` (names, in order) and ``skeleton`` (0-based index pairs)."""
    order = {name: i for i, name in enumerate(names)}
    return {"keypoints": list(names), "skeleton": [[order[a], order[b]] for a, b in skeleton]}


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{root}: output folder is not writable ({exc.strerror or exc})") from None


def _read_json(path: Path, limit: int) -> dict:
    if path.stat().st_size > limit:
        raise UserError(f"{path}: larger than {limit} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def _imread(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise UserError(f"{path}: missing or unreadable image")
    return image


def _write_pass(path: Path, channels: str, array: np.ndarray) -> None:
    """Encode one pass: 8-bit colour, 8- and 16-bit id PNGs, float32 EXRs of channels Z, XY or XYZ."""
    if path.suffix == ".exr":
        _write_exr(path, {"Z": array} if channels == "Z" else {c: array[..., i] for i, c in enumerate(channels)})
    else:
        _write_png(path, cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if channels == "RGB" else array)


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write(path, lambda tmp: tmp.write_bytes(data.tobytes()))


def _write_exr(path: Path, channels: dict[str, np.ndarray]) -> None:
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in channels.items()}
    atomic_write(path, lambda tmp: OpenEXR.File(header, arrays).write(str(tmp)))


def _software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("sceneforge", "bpy", "numpy", "OpenEXR", "opencv-python-headless"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    versions["platform"] = sys.platform
    return versions
