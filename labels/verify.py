"""``sceneforge verify``: check a whole store against its records, and repair it.

A frame (and a sequence's point tracks) is intact when every file its record names exists with
the size and CRC-32 the record holds (records written before checks were recorded: the files
exist). Repair keeps the intact
records (the first of duplicates), removes the files of damaged frames, the files no record
names (orphans) and temporary files, and rewrites the counts; the next run renders what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .store import DOCUMENTS, DatasetStore, one_writer, parse_record, view_key, view_name


@dataclass
class VerifyReport:
    """What ``verify_store`` found (and, with repair, fixed)."""

    intact: int = 0
    damaged: list[str] = field(default_factory=list)  # "frame N: what is wrong"
    duplicates: list[int] = field(default_factory=list)  # indices of views recorded more than once
    unreadable_lines: list[int] = field(default_factory=list)  # frames.jsonl line numbers
    orphans: list[str] = field(default_factory=list)  # files no record names, relative to the store
    temporary: list[str] = field(default_factory=list)
    count_mismatch: str | None = None  # dataset.json's counts against the records
    repaired: bool = False

    def lines(self) -> list[str]:
        """The report as lines for a person: a summary, then up to 20 examples of each problem."""
        found = [f"{self.intact} intact frame(s)"]
        for title, items in (("damaged or missing", self.damaged), ("recorded twice", [f"frame {i}" for i in self.duplicates]),
                             ("unreadable lines of frames.jsonl", [f"line {n}" for n in self.unreadable_lines]),
                             ("files no record names", self.orphans), ("temporary files", self.temporary)):
            if items:
                found.append(f"{len(items)} {title}:")
                found += [f"  {item}" for item in items[:20]] + ([f"  ... and {len(items) - 20} more"] if len(items) > 20 else [])
        if self.count_mismatch:
            found.append(self.count_mismatch)
        return found

    @property
    def problems(self) -> int:
        """How many problems were found."""
        return (len(self.damaged) + len(self.duplicates) + len(self.unreadable_lines) + len(self.orphans)
                + len(self.temporary) + (self.count_mismatch is not None))


def verify_store(store: DatasetStore, repair: bool = False) -> VerifyReport:
    """Check every record, file and count of ``store``; with ``repair``, fix what was found
    (as the store's one writer)."""
    if repair:
        with one_writer(store.root):
            return _verify(store, repair)
    return _verify(store, repair)


def _verify(store: DatasetStore, repair: bool) -> VerifyReport:
    report = VerifyReport()
    seen: set[tuple[int, str]] = set()  # (frame index, camera name): one record per view
    intact: list[dict] = []
    named: set[str] = set()  # every file any record names, damaged frames' too
    path = store.root / "frames.jsonl"
    lines = path.read_bytes().split(b"\n") if path.exists() else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_record(line)
        except ValueError:
            report.unreadable_lines.append(number)
            continue
        name = f"frame {record['index']}" + (f" camera {view_name(record)}" if view_name(record) else "")
        if view_key(record) in seen:
            report.duplicates.append(record["index"])
            continue
        seen.add(view_key(record))
        named.update(record["files"].values())
        if (problem := store.frame_problem(record)) is not None:
            report.damaged.append(f"{name}: {problem}")
        else:
            intact.append(record)
    order = {camera: k for k, camera in enumerate(store.cameras)}
    intact.sort(key=lambda r: (r["index"], order.get(view_name(r), len(order))))
    report.intact = len(intact)
    kept = {path for record in intact for path in record["files"].values()}
    sequences = []  # intact sequence records (point tracks)
    for record in store.sequence_records():
        named.update(record["files"].values())
        if (problem := store.frame_problem(record)) is not None:
            camera = f" camera {record['camera']}" if record.get("camera") else ""
            report.damaged.append(f"sequence {record['scene_index']}{camera}: {problem}")
        else:
            sequences.append(record)
            kept.update(record["files"].values())
    for folder in (*store.meta["passes"], DOCUMENTS["scene"].split("/")[0], "tracks"):
        for path in sorted((store.root / folder).glob("*")) if (store.root / folder).is_dir() else ():
            relative = path.relative_to(store.root).as_posix()
            if path.name.endswith(".tmp"):
                report.temporary.append(relative)
            elif path.is_dir():  # scenes/textures: the USD stages' maps, shared by content
                report.temporary += [p.relative_to(store.root).as_posix() for p in sorted(path.glob(".*.tmp"))]
            elif not path.name.startswith(".") and relative not in named:  # dot files: the stage's own markers
                report.orphans.append(relative)
    finished = store.meta.get("counts", {}).get("finished")
    if finished != report.intact:
        report.count_mismatch = f"dataset.json says {finished} finished frame(s), {report.intact} are intact"
    if repair and report.problems:
        store.rewrite_records(intact)
        store.rewrite_sequence_records(sequences)
        for relative in (*report.orphans, *report.temporary, *(named - kept)):
            (store.root / relative).unlink(missing_ok=True)
        store.meta.setdefault("counts", {})["finished"] = report.intact
        store.save_metadata()
        report.repaired = True
    return report
