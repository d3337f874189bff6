"""Book-keeping of the main job (``tools/reconstruct.py``) over many photos.

* Inputs: :func:`list_inputs` (a photo, a folder, or a list file), one output
  folder name per input (:func:`output_stems`, computed on the whole list so
  that every shard agrees), and :func:`select_shard` for ``--shard=i/n``.
* Layout: the largest face of ``<stem>`` goes to ``<dir>/<stem>/``, face ``k``
  (k = 1, 2, … by decreasing size) to ``<dir>/<stem>/faces/<k>/``
  (:func:`face_folder`).
* Records: each finished input gets ``<dir>/.records/<stem>.json`` (its
  ``summary.json`` entry), written atomically after all of its files. A re-run
  skips inputs whose record says ``ok`` and whose files are all there; skipped
  inputs are tried again (decoding fails fast). Shards share nothing but these
  files, so any number of processes, on one machine or many with a shared
  file system, can work on one output folder.
* :func:`write_summary` rebuilds ``<dir>/summary.json`` and ``<dir>/index.html``
  from the records of the whole input list: inputs of other shards that have
  not finished yet are ``pending``. The last process to finish writes the
  complete summary.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from absl import logging

from recon_tf.data.readers import IMAGE_EXTENSIONS

RECORDS = ".records"
STAGES = ("prepare", "fit", "fine", "write")


def list_inputs(spec: str) -> list[str]:
    """Image paths from a photo, a folder (recursive, sorted) or a list file.

    A list file (``.txt``, ``.lst``, ``.list``) has one path per line; relative
    paths are relative to the list file; ``#`` starts a comment. A folder
    contributes every file whose extension is in
    :data:`recon_tf.data.readers.IMAGE_EXTENSIONS`
    (case-insensitive); files without one are ignored. A single path is taken
    as given, whatever it holds (a non-image is reported, not ignored).

    Raises:
      FileNotFoundError: ``spec`` does not exist.
    """
    if os.path.isdir(spec):
        return [p for p in _folder_files(spec) if p.lower().endswith(IMAGE_EXTENSIONS)]
    if not os.path.exists(spec):
        raise FileNotFoundError(f"--input {spec} does not exist")
    if spec.lower().endswith((".txt", ".lst", ".list")):
        base = os.path.dirname(os.path.abspath(spec))
        with open(spec, encoding="utf-8") as f:
            lines = [ln.split("#", 1)[0].strip() for ln in f]
        return [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines if ln]
    return [spec]


def ignored_inputs(spec: str) -> list[str]:
    """The files of a folder ``spec`` that :func:`list_inputs` leaves out (no image
    extension: annotations, videos, notes), sorted; none for a photo or a list file.

    The main job lists them in ``summary.json`` (``ignored``), so that every file of
    the folder is accounted for."""
    if not os.path.isdir(spec):
        return []
    return [p for p in _folder_files(spec) if not p.lower().endswith(IMAGE_EXTENSIONS)]


def _folder_files(folder: str) -> list[str]:
    """Every file under ``folder`` (recursive), sorted."""
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.join(root, f) for f in files]
    return sorted(out)


def output_stems(paths: list[str]) -> list[str]:
    """A unique output folder name per input (file stem; ``_2``, ``_3`` on clashes,
    skipping names another input's stem already takes, e.g. ``a.jpg``, ``a.png``,
    ``a_2.jpg`` → ``a``, ``a_3``, ``a_2``)."""
    bases = [os.path.splitext(os.path.basename(p))[0] or "image" for p in paths]
    taken = set(bases)
    used: set[str] = set()
    stems = []
    for stem in bases:
        name, k = stem, 1
        while name in used or (name != stem and name in taken):
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        stems.append(name)
    return stems


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n; ``""`` → (0, 1).

    Raises:
      ValueError: for anything else.
    """
    if not spec:
        return 0, 1
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError as err:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from err
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {spec}: need 0 <= i < n")
    return i, n


def select_shard(items: list, index: int, count: int) -> list:
    """Every ``count``-th item starting at ``index`` (shards are disjoint, and
    together cover ``items``)."""
    return items[index::count]


def face_folder(stem: str, face_index: int) -> str:
    """Output folder of a photo's face, relative to the output root."""
    return stem if face_index == 0 else os.path.join(stem, "faces", str(face_index))


def record_path(out: str, stem: str) -> str:
    return os.path.join(out, RECORDS, f"{stem}.json")


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def write_record(out: str, stem: str, entry: dict) -> None:
    """Store an input's summary entry (after all of its files are written)."""
    _write_json(record_path(out, stem), entry)


def read_record(out: str, stem: str) -> dict | None:
    """An input's stored entry, or None (missing or unreadable)."""
    path = record_path(out, stem)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        logging.warning("ignoring unreadable %s", path)
        return None


def is_complete(out: str, stem: str, files: tuple[str, ...]) -> bool:
    """True when the input's record says ``ok`` and every face has ``files``."""
    entry = read_record(out, stem)
    if not entry or entry.get("status") != "ok":
        return False
    return all(os.path.exists(os.path.join(out, face["output"], name))
               for face in entry.get("faces", []) for name in files)


def write_summary(out: str, paths: list[str], stems: list[str], wall_seconds: float,
                  ignored: Sequence[str] = ()) -> dict:
    """Rebuild ``summary.json`` and ``index.html`` from the records of ``paths``.

    Returns:
      the summary: ``{"images": [entry per input], "ignored": [...], "totals": {...}}``,
      where an entry is ``{"path", "status": ok | skipped | pending, ...}``,
      ``ignored`` lists ``{"path", "reason"}`` for the input folder's files without an
      image extension (:func:`ignored_inputs`), and the totals count inputs by
      status, ignored files, faces, and seconds per stage.
    """
    from recon_tf.gallery import write_index

    images = []
    for path, stem in zip(paths, stems):
        entry = read_record(out, stem)
        images.append(entry if entry is not None else
                      {"path": path, "status": "pending", "output": stem})
    totals: dict = {"inputs": len(images)}
    for status in ("ok", "skipped", "pending"):
        totals[status] = sum(e["status"] == status for e in images)
    totals["ignored"] = len(ignored)
    totals["faces"] = sum(len(e.get("faces", [])) for e in images)
    totals["seconds"] = {s: round(sum(e.get("seconds", {}).get(s, 0.0) for e in images), 2)
                         for s in STAGES}
    totals["wall_seconds_this_process"] = round(wall_seconds, 2)
    summary = {"images": images,
               "ignored": [{"path": p, "reason": "not an image file name (extension)"}
                           for p in ignored],
               "totals": totals}
    _write_json(os.path.join(out, "summary.json"), summary)
    write_index(out, summary)
    return summary


class JobProgress:
    """Logs ``done/total inputs, faces, inputs/s, ETA`` at most every ``every_s`` seconds."""

    def __init__(self, total: int, every_s: float = 10.0):
        self.total, self.every = total, every_s
        self.start = time.time()
        self.last = 0.0

    def update(self, done: int, faces: int, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        logging.info("%d/%d inputs, %d faces, %.3f inputs/s, ETA %s", done, self.total, faces,
                     rate, time.strftime("%H:%M:%S", time.gmtime(eta)))
