"""`llmad data fetch`: download from a local HTTP server, verify, resume, fail fast offline."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmad.data.fetch import DEFAULT_MANIFEST, fetch_flowbench, load_manifest, manifest_entries, member_digest
from llmad.data.flowbench import load_jobs
from llmad.errors import DataError, LlmadError

from conftest import make_run_frame

WF = "tinywf"


def _run_csvs() -> dict[str, bytes]:
    return {f"{WF}-run{r:04d}.csv": make_run_frame(r, n_jobs=4, anomalous_host="worker1" if r == 2 else None)
            .to_csv(index=False).encode() for r in (1, 2)}


def _zip_bytes(members: dict[str, bytes], folder: str = "", method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(folder + name, data)
        zf.writestr(folder + "README.txt", b"not a run file")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``files`` (URL path -> bytes); Range support and early cut-off are switchable per server."""

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if (rng and srv.honor_range) else 0
        if start >= len(body) and rng and srv.honor_range:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if srv.cut_after is not None:  # simulate a dropped connection: promise everything, send a prefix
            payload = payload[: srv.cut_after]
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Start a 127.0.0.1 server in a thread: serve(files, honor_range=True, cut_after=None) -> server."""
    servers = []

    def start(files: dict[str, bytes], honor_range: bool = True, cut_after: int | None = None):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.files, srv.honor_range, srv.cut_after, srv.requests = files, honor_range, cut_after, []
        srv.base_url = f"http://127.0.0.1:{srv.server_address[1]}/data"
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def official(tmp_path):
    """An 'official' archive (CSVs inside a folder) and a manifest pinned to its members."""
    members = _run_csvs()
    archive = _zip_bytes(members, folder=f"{WF}/")
    # The manifest is computed from a differently packed zip of the same CSVs, like ours from ../shared/data.
    src = tmp_path / "src" / "flowbench"
    src.mkdir(parents=True)
    (src / f"{WF}.zip").write_bytes(_zip_bytes(members, method=zipfile.ZIP_STORED))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"workflows": manifest_entries(tmp_path / "src", base_url="http://unused")}))
    return archive, manifest


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_member_digest_is_content_only_and_follows_the_documented_formula(tmp_path):
    members = _run_csvs()
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    a.write_bytes(_zip_bytes(members, folder="x/y/"))
    b.write_bytes(_zip_bytes(members, method=zipfile.ZIP_STORED))
    assert a.read_bytes() != b.read_bytes()
    lines = sorted(f"{n} {hashlib.sha256(d).hexdigest()}\n" for n, d in members.items())
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert member_digest(a) == member_digest(b) == (expected, 2)
    changed = dict(members, **{f"{WF}-run0002.csv": members[f"{WF}-run0002.csv"] + b"\n"})
    b.write_bytes(_zip_bytes(changed))
    assert member_digest(b)[0] != expected


def test_full_download_verifies_and_loads(tmp_path, serve, official):
    archive, manifest = official
    srv = serve({f"/data/{WF}.zip": archive})
    out = fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path / "d", manifest=manifest, base_url=srv.base_url)
    dest = tmp_path / "d" / "flowbench" / f"{WF}.zip"
    assert out == [dest] and dest.read_bytes() == archive
    assert not dest.with_name(dest.name + ".part").exists()
    assert srv.requests == [(f"/data/{WF}.zip", None)]
    assert load_jobs(f"flowbench:{WF}", tmp_path / "d")["run_id"].nunique() == 2
    # A verified zip already in place is not downloaded again.
    assert fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path / "d", manifest=manifest,
                           base_url=srv.base_url) == [dest]
    assert len(srv.requests) == 1


def test_resume_from_partial_part_uses_range(tmp_path, serve, official):
    archive, manifest = official
    srv = serve({f"/data/{WF}.zip": archive})
    part = tmp_path / "flowbench" / f"{WF}.zip.part"
    part.parent.mkdir(parents=True)
    half = len(archive) // 2
    part.write_bytes(archive[:half])
    [dest] = fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert srv.requests == [(f"/data/{WF}.zip", f"bytes={half}-")]
    assert dest.read_bytes() == archive and not part.exists()


def test_dropped_connection_keeps_part_and_next_run_resumes(tmp_path, serve, official):
    archive, manifest = official
    cut = serve({f"/data/{WF}.zip": archive}, cut_after=len(archive) // 3)
    with pytest.raises(LlmadError, match="run the same command again to resume"):
        fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=cut.base_url)
    part = tmp_path / "flowbench" / f"{WF}.zip.part"
    assert part.stat().st_size == len(archive) // 3 and not (tmp_path / "flowbench" / f"{WF}.zip").exists()
    srv = serve({f"/data/{WF}.zip": archive})
    [dest] = fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert srv.requests[0][1] == f"bytes={len(archive) // 3}-" and dest.read_bytes() == archive


def test_server_ignoring_range_restarts_download(tmp_path, serve, official):
    archive, manifest = official
    srv = serve({f"/data/{WF}.zip": archive}, honor_range=False)
    part = tmp_path / "flowbench" / f"{WF}.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive[:100])
    [dest] = fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert srv.requests == [(f"/data/{WF}.zip", "bytes=100-")]  # asked, got a full 200, started over
    assert dest.read_bytes() == archive


def test_complete_part_answered_416_is_verified_and_kept(tmp_path, serve, official):
    archive, manifest = official
    srv = serve({f"/data/{WF}.zip": archive})
    part = tmp_path / "flowbench" / f"{WF}.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive)
    [dest] = fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert srv.requests == [(f"/data/{WF}.zip", f"bytes={len(archive)}-")] and dest.read_bytes() == archive


def test_checksum_mismatch_raises_and_leaves_nothing(tmp_path, serve, official):
    archive, manifest = official
    other = _zip_bytes(dict(_run_csvs(), **{f"{WF}-run0003.csv": b",anomaly_type\nj,None\n"}))
    srv = serve({f"/data/{WF}.zip": other})
    with pytest.raises(DataError) as e:
        fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert f"{WF}.zip.part" in str(e.value) and "mismatch" in str(e.value)
    assert list((tmp_path / "flowbench").iterdir()) == []


def test_known_archive_sha256_is_verified(tmp_path, serve, official):
    archive, manifest = official
    m = json.loads(manifest.read_text())
    srv = serve({f"/data/{WF}.zip": archive})
    m["workflows"][WF]["archive_sha256"] = hashlib.sha256(b"something else").hexdigest()
    manifest.write_text(json.dumps(m))
    with pytest.raises(DataError, match="archive sha256 mismatch"):
        fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert list((tmp_path / "flowbench").iterdir()) == []
    m["workflows"][WF]["archive_sha256"] = hashlib.sha256(archive).hexdigest()
    manifest.write_text(json.dumps(m))
    [dest] = fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert dest.read_bytes() == archive


def test_foreign_zip_in_place_is_not_overwritten(tmp_path, serve, official):
    archive, manifest = official
    srv = serve({f"/data/{WF}.zip": archive})
    dest = tmp_path / "flowbench" / f"{WF}.zip"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(_zip_bytes({f"{WF}-run0009.csv": b",anomaly_type\nj,None\n"}))
    before = dest.read_bytes()
    with pytest.raises(DataError, match="move it away"):
        fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    assert dest.read_bytes() == before and srv.requests == []


def test_offline_fails_fast_with_one_clear_error(tmp_path, official):
    _, manifest = official
    t0 = time.monotonic()
    with pytest.raises(LlmadError) as e:
        fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest,
                        base_url=f"http://127.0.0.1:{_closed_port()}/data", timeout=5)
    msg = str(e.value)
    assert time.monotonic() - t0 < 3
    assert "cannot reach 127.0.0.1" in msg and "offline?" in msg and "data already here:" in msg
    assert "\n" not in msg and not (tmp_path / "flowbench").exists()


def test_http_404_and_unknown_workflow_are_user_errors(tmp_path, serve, official):
    _, manifest = official
    srv = serve({})
    with pytest.raises(LlmadError, match="HTTP 404"):
        fetch_flowbench(f"flowbench:{WF}", data_dir=tmp_path, manifest=manifest, base_url=srv.base_url)
    with pytest.raises(LlmadError, match="unknown workflow 'nope'.*tinywf"):
        fetch_flowbench("flowbench:nope", data_dir=tmp_path, manifest=manifest)
    with pytest.raises(LlmadError, match="only flowbench"):
        fetch_flowbench("smd:x", data_dir=tmp_path, manifest=manifest)
    with pytest.raises(DataError, match="manifest not found"):
        fetch_flowbench("flowbench", data_dir=tmp_path, manifest=tmp_path / "missing.json")


def test_cli_fetch_succeeds(tmp_path, serve, official, capsys):
    from llmad.cli import main

    archive, manifest = official
    srv = serve({f"/data/{WF}.zip": archive})
    main(["data", "fetch", f"flowbench:{WF}", "--base-url", srv.base_url, "--manifest", str(manifest),
          "--data-dir", str(tmp_path)])  # returns normally (exit code 0); errors would SystemExit(2)
    dest = tmp_path / "flowbench" / f"{WF}.zip"
    assert capsys.readouterr().out.strip() == str(dest) and dest.read_bytes() == archive


def test_cli_unreachable_exits_2_with_one_line(tmp_path, official):
    _, manifest = official
    r = subprocess.run([sys.executable, "-m", "llmad", "data", "fetch", f"flowbench:{WF}", "--manifest",
                        str(manifest), "--data-dir", str(tmp_path), "--timeout", "3",
                        "--base-url", f"http://127.0.0.1:{_closed_port()}/data"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmad: error: cannot reach"), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_make_manifest_script_regenerates_and_keeps_known_archive_sums(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        import make_manifest
    finally:
        sys.path.pop(0)
    src = tmp_path / "flowbench"
    src.mkdir()
    (src / f"{WF}.zip").write_bytes(_zip_bytes(_run_csvs()))
    out = tmp_path / "m.json"
    assert make_manifest.main(["--data-dir", str(tmp_path), "--out", str(out)]) == 0
    e = load_manifest(out)[WF]
    assert (e.members, e.archive_sha256) == (2, None)
    assert e.url == f"https://github.com/PoSeiDon-Workflows/FlowBench/raw/main/data/{WF}.zip"
    m = json.loads(out.read_text())
    m["workflows"][WF]["archive_sha256"] = "ab" * 32
    out.write_text(json.dumps(m))
    make_manifest.main(["--data-dir", str(tmp_path), "--out", str(out)])
    assert load_manifest(out)[WF].archive_sha256 == "ab" * 32
    make_manifest.main(["--data-dir", str(tmp_path), "--out", str(out), "--official"])
    assert load_manifest(out)[WF].archive_sha256 == hashlib.sha256((src / f"{WF}.zip").read_bytes()).hexdigest()


@pytest.mark.integration
def test_committed_manifest_covers_real_data(real_data_dir):
    entries = load_manifest(DEFAULT_MANIFEST)
    zips = sorted((real_data_dir / "flowbench").glob("*.zip"))
    assert sorted(entries) == [z.stem for z in zips]
    for z in zips:
        e = entries[z.stem]
        assert e.url.startswith("https://github.com/PoSeiDon-Workflows/FlowBench/raw/main/data/")
        with zipfile.ZipFile(z) as zf:
            assert sum(n.endswith(".csv") and "-run" in n for n in zf.namelist()) == e.members


@pytest.mark.integration
def test_fetch_real_archive_from_local_mirror_with_committed_manifest(tmp_path, serve, real_data_dir):
    # The committed manifest verifies the real (re-packed) archives: smallest workflow to stay fast.
    name = "eht_imaging.zip"
    srv = serve({f"/data/{name}": (real_data_dir / "flowbench" / name).read_bytes()})
    [dest] = fetch_flowbench("flowbench:eht_imaging", data_dir=tmp_path, base_url=srv.base_url)
    assert dest == tmp_path / "flowbench" / name and dest.stat().st_size > 0
