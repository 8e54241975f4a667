"""`llmad data fetch`: download the official Flow-Bench archives, verify them against ``data/manifest.json``, resume.

The manifest (regenerate with ``scripts/make_manifest.py``) has one entry per workflow::

    "1000genome": {"file": "1000genome.zip", "url": "https://github.com/.../raw/main/data/1000genome.zip",
                   "archive_sha256": null, "members": 350, "members_sha256": "<hex>"}

``members_sha256`` is the sha256 of the sorted lines ``"<member basename> <sha256 of member bytes>\\n"`` over the
run CSVs (``*-runNNNN.csv``, at any folder depth) of the archive. It pins the *content*, so it holds for the official
archive and for any re-packed zip of the same CSVs. ``archive_sha256`` pins the archive's own bytes; it is ``null``
until someone records it from an official download (``make_manifest.py --official``) and is verified when set.

Downloads stream to ``<data_dir>/flowbench/<workflow>.zip.part`` (HTTP Range resume from the part's size; a server
that ignores Range restarts it), are verified, then renamed into place, so a ``<workflow>.zip`` is always complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from llmad.data.specs import PROJECT_ROOT, candidate_data_dirs
from llmad.errors import DataError, LlmadError
from llmad.interrupts import note_run

DEFAULT_MANIFEST = PROJECT_ROOT / "data" / "manifest.json"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
OFFICIAL_BASE_URL = "https://github.com/PoSeiDon-Workflows/FlowBench/raw/main/data"
# Same file-name rule as the loader (llmad.data.flowbench.RUN_RE), applied to the member's basename.
MEMBER_RE = re.compile(r"^.+-run\d{4}\.csv$")
CHUNK = 1 << 16


# ---------------------------------------------------------------- digests

def _is_run_member(name: str) -> bool:
    """A run CSV anywhere in the archive, excluding macOS resource-fork copies that zip tools add."""
    parts = name.split("/")
    base = parts[-1]
    return bool(MEMBER_RE.match(base)) and not base.startswith("._") and "__MACOSX" not in parts


def member_digest(path: str | Path) -> tuple[str, int]:
    """(members_sha256, number of run CSVs) of a zip: content-only, independent of how the zip was packed."""
    lines = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir() or not _is_run_member(info.filename):
                    continue
                h = hashlib.sha256()
                with zf.open(info) as fh:
                    for chunk in iter(lambda: fh.read(CHUNK), b""):
                        h.update(chunk)
                lines.append(f"{info.filename.rsplit('/', 1)[-1]} {h.hexdigest()}\n")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise DataError(f"not a readable zip archive ({e})", file=str(path)) from None
    lines.sort()
    return hashlib.sha256("".join(lines).encode()).hexdigest(), len(lines)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- manifest

@dataclass
class Entry:
    """One workflow's manifest entry."""

    workflow: str
    file: str
    url: str
    members: int
    members_sha256: str
    archive_sha256: str | None = None


def load_manifest(manifest: str | Path | None = None, base_url: str | None = None) -> dict[str, Entry]:
    """Workflow -> Entry from a manifest JSON; ``base_url`` replaces every URL's folder (mirrors, tests)."""
    path = Path(manifest) if manifest is not None else DEFAULT_MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("manifest not found (pass --manifest)", file=str(path)) from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read manifest as JSON ({e})", file=str(path)) from None
    wfs = raw.get("workflows") if isinstance(raw, dict) else None
    if not isinstance(wfs, dict) or not wfs:
        raise DataError("expected a JSON object with a non-empty 'workflows' object", file=str(path),
                        field="workflows")
    out = {}
    for wf, e in wfs.items():
        try:
            file = e.get("file") or f"{wf}.zip"
            url = f"{base_url.rstrip('/')}/{file}" if base_url else e["url"]
            out[wf] = Entry(wf, file, url, int(e["members"]), str(e["members_sha256"]).lower(),
                            (str(e["archive_sha256"]).lower() if e.get("archive_sha256") else None))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"bad entry for workflow {wf!r} (needs url, members, members_sha256; {err!r})",
                            file=str(path), field=wf) from None
    return out


def _select(target: str, entries: dict[str, Entry]) -> list[Entry]:
    kind, _, arg = target.partition(":")
    if kind != "flowbench":
        raise LlmadError(f"cannot fetch {target!r}: only flowbench or flowbench:<workflow> can be downloaded")
    if not arg or arg in ("all", "*"):
        return list(entries.values())
    names = [a.strip() for a in arg.split(",") if a.strip()]
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise LlmadError(f"unknown workflow {unknown[0]!r} for fetch; the manifest knows: {', '.join(entries)}")
    return [entries[n] for n in names]


# ---------------------------------------------------------------- verification

def verify(path: Path, entry: Entry) -> None:
    """Raise DataError naming ``path`` unless it matches the entry's member digest (and archive sha256 if known)."""
    if entry.archive_sha256 is not None:
        got = file_sha256(path)
        if got != entry.archive_sha256:
            raise DataError(f"archive sha256 mismatch for {entry.workflow}: got {got}, "
                            f"manifest says {entry.archive_sha256}", file=str(path))
    digest, n = member_digest(path)
    if n != entry.members or digest != entry.members_sha256:
        raise DataError(f"content mismatch for {entry.workflow}: {n} run CSVs with members_sha256 {digest[:16]}..., "
                        f"manifest says {entry.members} with {entry.members_sha256[:16]}...", file=str(path))


# ---------------------------------------------------------------- download

def _data_here() -> str:
    """Where Flow-Bench zips already exist (for the offline message)."""
    found = []
    for d in candidate_data_dirs():
        fb = d / "flowbench"
        zips = sorted(p.stem for p in fb.glob("*.zip")) if fb.is_dir() else []
        if zips:
            found.append(f"{fb} ({len(zips)} workflows: {', '.join(zips)})")
    return "; ".join(found) if found else "none"


def _unreachable(url: str, reason: object) -> LlmadError:
    host = urllib.parse.urlsplit(url).netloc or url
    return LlmadError(f"cannot reach {host} ({reason}) (offline?); nothing downloaded; "
                      f"data already here: {_data_here()}")


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "llmad-data-fetch/1"})
    if start > 0:
        # Redirects keep this header (urllib copies all but content headers), so GitHub -> CDN resumes too.
        req.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            return e
        raise LlmadError(f"HTTP {e.code} {e.reason} for {url} (is the manifest's URL current? "
                         f"--base-url overrides it)") from None
    except urllib.error.URLError as e:
        raise _unreachable(url, getattr(e, "reason", e)) from None
    except (TimeoutError, ConnectionError, socket.gaierror, http.client.HTTPException, OSError) as e:
        raise _unreachable(url, e) from None


def _content_range_start(resp) -> int | None:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", "") or "")
    return int(m.group(1)) if m else None


def _progress(console):
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)


def download(url: str, part: Path, timeout: float = 10.0, console=None, label: str = "") -> None:
    """Stream ``url`` into ``part``, resuming from its current size with HTTP Range; restart if Range is ignored."""
    from rich.console import Console

    console = console or Console(stderr=True)
    for _attempt in range(2):
        start = part.stat().st_size if part.exists() else 0
        resp = _open(url, start, timeout)
        with contextlib.closing(resp):
            status = getattr(resp, "status", None) or resp.getcode()
            if status == 416:
                # Nothing left to send: the part is already complete (or bogus; verification decides).
                total = re.search(r"/(\d+)$", resp.headers.get("Content-Range", "") or "")
                if total and int(total.group(1)) == start:
                    return
                part.unlink(missing_ok=True)
                continue
            if status == 206 and _content_range_start(resp) == start:
                mode, done = "ab", start
            elif status == 200:
                mode, done = "wb", 0  # the server ignored Range (or we asked from 0): start over
            else:
                part.unlink(missing_ok=True)
                continue
            part.parent.mkdir(parents=True, exist_ok=True)  # only once the server answers: offline leaves no trace
            length = resp.headers.get("Content-Length")
            total = done + int(length) if length and length.isdigit() else None
            with _progress(console) as prog, open(part, mode) as fh:
                task = prog.add_task(label or part.name, total=total, completed=done)
                try:
                    for chunk in iter(lambda: resp.read(CHUNK), b""):
                        fh.write(chunk)
                        prog.update(task, advance=len(chunk))
                except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                    fh.flush()
                    raise LlmadError(f"download of {url} interrupted ({e}); {part.stat().st_size:,} bytes kept in "
                                     f"{part}; run the same command again to resume") from None
            if total is not None and part.stat().st_size < total:
                raise LlmadError(f"download of {url} ended early ({part.stat().st_size:,} of {total:,} bytes, "
                                 f"kept in {part}); run the same command again to resume")
            return
    raise LlmadError(f"server for {url} answered a resume request inconsistently twice; delete {part} and retry")


def fetch_flowbench(target: str = "flowbench", data_dir: str | Path | None = None,
                    manifest: str | Path | None = None, base_url: str | None = None,
                    timeout: float = 10.0) -> list[Path]:
    """Download (or find already verified) Flow-Bench zips into ``<data_dir>/flowbench/``; return their paths."""
    from rich.console import Console

    entries = _select(target, load_manifest(manifest, base_url))
    dest_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    dest_dir = dest_dir / "flowbench"
    note_run(dest_dir, "run the same command again (partial downloads continue)", kept="partial downloads")
    console = Console(stderr=True)
    out = []
    for e in entries:
        dest = dest_dir / f"{e.workflow}.zip"
        if dest.exists():
            try:
                verify(dest, e)
            except DataError as err:
                # Never overwrite a file we did not just download: it may be someone's own data.
                raise DataError(f"{err}; it is not the manifest's archive: move it away to download the official "
                                f"one") from None
            if console.is_terminal:
                console.print(f"{e.workflow}: already here and verified")
            out.append(dest)
            continue
        part = dest.with_name(dest.name + ".part")
        t0 = time.monotonic()
        download(e.url, part, timeout=timeout, console=console, label=e.workflow)
        try:
            verify(part, e)
        except DataError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        if console.is_terminal:
            console.print(f"{e.workflow}: {dest.stat().st_size / 1e6:.1f} MB verified in {time.monotonic() - t0:.1f} s")
        out.append(dest)
    return out


def manifest_entries(data_dir: str | Path, workflows: Iterable[str] | None = None, official: bool = False,
                     base_url: str = OFFICIAL_BASE_URL) -> dict[str, dict]:
    """Manifest entries computed from ``<data_dir>/flowbench/*.zip`` (``official``: also pin the archive bytes)."""
    fb = Path(data_dir) / "flowbench"
    zips = sorted(fb.glob("*.zip"))
    if workflows is not None:
        wanted = set(workflows)
        zips = [z for z in zips if z.stem in wanted]
    if not zips:
        raise DataError("no <workflow>.zip files found", file=str(fb))
    out = {}
    for z in zips:
        digest, n = member_digest(z)
        if n == 0:
            raise DataError("no <workflow>-runNNNN.csv members in archive", file=str(z))
        out[z.stem] = {"file": z.name, "url": f"{base_url.rstrip('/')}/{z.name}",
                       "archive_sha256": file_sha256(z) if official else None,
                       "members": n, "members_sha256": digest}
    return out
