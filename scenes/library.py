"""Asset libraries: the files of a recipe's ``assets`` entries, listed lazily.

An entry names its files by a path (a file, a folder, a glob), a folder whose sub-folders are
the categories (``category_from: folder``), or a manifest (CSV or JSON: file, category, and
optional scale, size, up_axis per row). Listing checks only what is cheap (the file exists, a
known format, within the size limit); a file is parsed when a scene first draws it (then cached
on disk, ``assets.mesh_cache_dir``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .assets import (
    ASSET_SUFFIXES,
    MAX_LIBRARY_FILES,
    AssetError,
    AssetModel,
    Keypoints,
    asset_model,
    asset_ref,
    check_asset_file,
    folder_files,
)
from .spec import AssetRef

MAX_MANIFEST_BYTES = 16 << 20
MANIFEST_COLUMNS = ("file", "category", "scale", "size", "up_axis")
MAX_CATEGORY_LENGTH = 128


@dataclass(frozen=True, eq=False)
class LibraryFile:
    """One asset of a library: a file with its load options, listed but not parsed yet."""

    path: str  # absolute
    category: str
    entry: int  # index of its recipe ``assets`` entry
    field: str  # the entry's field that lists it: path or manifest
    row: str = ""  # the manifest row ("list.csv:12", "list.json: [3]"), "" for other entries
    variants: tuple[tuple[str, str], ...] = ()
    up_axis: str | None = None
    scale: float = 1.0
    size: float | None = None
    keypoints: Keypoints = Keypoints()  # the entry's, or a USD file's own (read when listed); the entry's skeleton

    def ref(self) -> AssetRef:
        """The file's reference (its bytes hashed, not parsed). Raises AssetError naming the row and file."""
        try:
            return asset_ref(Path(self.path), variants=dict(self.variants), up_axis=self.up_axis,
                             scale=self.scale, size=self.size)
        except AssetError as exc:
            raise AssetError(self._at(exc)) from None

    @cached_property
    def content_hash(self) -> str:
        """The hash of the file's bytes and load options, read once per listing (what a recipe's
        content hash covers: the files as they were when first asked)."""
        return self.ref().hash

    def model(self) -> tuple[AssetRef, AssetModel]:
        """The file's reference and parsed model. Raises AssetError naming the row and file."""
        ref = self.ref()
        try:
            return ref, asset_model(ref)
        except AssetError as exc:
            raise AssetError(self._at(exc)) from None

    def _at(self, exc: AssetError) -> str:
        return f"{self.row}: {exc}" if self.row else str(exc)


def folder_categories(folder: Path, written: str) -> list[tuple[Path, str]]:
    """(file, category) of every asset file under ``folder`` (recursively), each file's category
    being the name of the sub-folder of ``folder`` it lies in. Raises AssetError naming the folder."""
    if not folder.is_dir():
        raise AssetError(f"{written}: no such folder (category_from: folder needs a folder of category folders)")
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in folder_files(sub, recursive=True) if p.suffix.lower() in ASSET_SUFFIXES)
        found += [(file, sub.name[:MAX_CATEGORY_LENGTH]) for file in files]
        if len(found) > MAX_LIBRARY_FILES:
            raise AssetError(f"{written}: holds more than {MAX_LIBRARY_FILES} asset files")
    if not found:
        loose = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in ASSET_SUFFIXES]
        hint = f" ({len(loose)} lie directly in it: move them into a folder named by their category)" if loose else ""
        raise AssetError(f"{written}: holds no category folders with asset files ({', '.join(ASSET_SUFFIXES)}){hint}")
    return found


@dataclass(frozen=True)
class ManifestRow:
    """One asset of a manifest: the file (absolute), its category and load options (None: the entry's)."""

    file: Path
    category: str | None
    scale: float | None
    size: float | None
    up_axis: str | None
    where: str  # "list.csv:12" or "list.json: [3]"


def read_manifest(path: Path) -> list[ManifestRow]:
    """The rows of a CSV (a header row naming the columns) or JSON (a list of objects) manifest:
    columns ``file`` (relative to the manifest), ``category``, and optional ``scale``, ``size``,
    ``up_axis``. Every file is checked cheaply (``check_asset_file``), none is parsed. Raises
    AssetError naming the manifest and its line (CSV) or entry (JSON)."""
    if not path.is_file():
        raise AssetError(f"{path}: no such manifest file")
    if path.suffix.lower() not in (".csv", ".json"):
        raise AssetError(f"{path}: a manifest is a .csv or .json file")
    if (length := path.stat().st_size) > MAX_MANIFEST_BYTES:
        raise AssetError(f"{path}: {length} bytes is more than the {MAX_MANIFEST_BYTES} byte limit for a manifest")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AssetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix.lower() == ".csv":
        records = _csv_records(text, path)
    else:
        records = _json_records(text, path)
    if not records:
        raise AssetError(f"{path}: lists no assets")
    if len(records) > MAX_LIBRARY_FILES:
        raise AssetError(f"{path}: lists {len(records)} assets, more than {MAX_LIBRARY_FILES}")
    return [_row(record, where, path.parent) for where, record in records]


def _csv_records(text: str, path: Path) -> list[tuple[str, dict]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise AssetError(f"{path}: empty; a manifest starts with a header row such as file,category") from None
    except csv.Error as exc:
        raise AssetError(f"{path}:1: {exc}") from None
    _check_columns(header, f"{path}:1")
    records = []
    try:
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise AssetError(f"{where}: {len(cells)} values, the header names {len(header)} columns")
            records.append((where, {name: cell.strip() for name, cell in zip(header, cells) if cell.strip()}))
    except csv.Error as exc:
        raise AssetError(f"{path}:{reader.line_num}: {exc}") from None
    return records


def _json_records(text: str, path: Path) -> list[tuple[str, dict]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AssetError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(document, list):
        raise AssetError(f"{path}: a JSON manifest is a list of objects such as "
                         '{"file": "a.glb", "category": "mug"}')
    records = []
    for i, item in enumerate(document):
        where = f"{path}: [{i}]"
        if not isinstance(item, dict):
            raise AssetError(f"{where}: expected an object with file and category, got {type(item).__name__}")
        _check_columns(list(item), where)
        records.append((where, {key: value for key, value in item.items() if value is not None}))
    return records


def _check_columns(names: list[str], where: str) -> None:
    if unknown := [name for name in names if name not in MANIFEST_COLUMNS]:
        raise AssetError(f"{where}: unknown column {unknown[0]!r}; expected some of: {', '.join(MANIFEST_COLUMNS)}")
    if "file" not in names:
        raise AssetError(f"{where}: no 'file' column")


def _row(record: dict, where: str, folder: Path) -> ManifestRow:
    """A manifest record checked: its file, category and options."""
    file = record.get("file")
    if not isinstance(file, str) or not file:
        raise AssetError(f"{where}: file: expected a path relative to the manifest, got {file!r}")
    category = record.get("category")
    if category is not None and (not isinstance(category, str) or not 0 < len(category) <= MAX_CATEGORY_LENGTH):
        raise AssetError(f"{where}: category: expected a name of 1 to {MAX_CATEGORY_LENGTH} characters, got {category!r}")
    scale, size = (_positive(record.get(name), name, where) for name in ("scale", "size"))
    if scale is not None and size is not None:
        raise AssetError(f"{where}: give scale or size, not both")
    up_axis = record.get("up_axis")
    if up_axis is not None and up_axis not in ("Y", "Z"):
        raise AssetError(f"{where}: up_axis: expected Y or Z, got {up_axis!r}")
    path = (folder / file).resolve()
    try:
        check_asset_file(path)
    except AssetError as exc:
        raise AssetError(f"{where}: {exc}") from None
    return ManifestRow(path, category, scale, size, up_axis, where)


def _positive(value: object, name: str, where: str) -> float | None:
    """A row's scale or size: None when absent, else a finite number > 0."""
    if value is None:
        return None
    try:
        number = float(value)  # CSV cells are text; JSON gives numbers
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise AssetError(f"{where}: {name}: expected a number > 0, got {value!r}")
    return number
