#!/usr/bin/env python
"""Regenerate data/manifest.json (what `llmad data fetch` verifies) from a folder of Flow-Bench zips.

    .venv/bin/python scripts/make_manifest.py --data-dir ../shared/data            # content digests only
    .venv/bin/python scripts/make_manifest.py --data-dir DIR --official            # DIR holds official downloads

The re-packed zips in ../shared/data hold the official CSVs byte for byte but are not the official archives, so
by default only the content digest (members_sha256) is recorded and archive_sha256 stays null. Known
archive_sha256 values already in the output manifest are kept unless --official recomputes them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmad.data.fetch import DEFAULT_MANIFEST, OFFICIAL_BASE_URL, manifest_entries  # noqa: E402
from llmad.data.specs import find_data_dir  # noqa: E402
from llmad.io import write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", help="folder with flowbench/<workflow>.zip (default: the usual data dir lookup)")
    ap.add_argument("--out", default=str(DEFAULT_MANIFEST), help="manifest to write (default data/manifest.json)")
    ap.add_argument("--workflow", action="append", help="only these workflows (repeatable); others are kept")
    ap.add_argument("--official", action="store_true", help="the zips are official downloads: record archive_sha256")
    ap.add_argument("--base-url", default=OFFICIAL_BASE_URL, help="folder URL of the archives")
    args = ap.parse_args(argv)

    data_dir = find_data_dir(args.data_dir, needs="flowbench")
    new = manifest_entries(data_dir, args.workflow, official=args.official, base_url=args.base_url)
    out = Path(args.out)
    old = json.loads(out.read_text()).get("workflows", {}) if out.exists() else {}
    merged = dict(old) if args.workflow else {}
    for wf, e in new.items():
        prev = old.get(wf, {})
        if (not args.official and prev.get("archive_sha256") and prev.get("members_sha256") == e["members_sha256"]):
            e["archive_sha256"] = prev["archive_sha256"]
        merged[wf] = e
    write_json(out, {
        "dataset": "flowbench",
        "source": "https://github.com/PoSeiDon-Workflows/FlowBench (MIT licence, PoSeiDon team)",
        "base_url": args.base_url,
        "members_sha256": "sha256 over the sorted lines '<member basename> <sha256 of member bytes>\\n' of the "
                          "archive's *-runNNNN.csv members (any folder depth); pins the CSV content, not the packing",
        "archive_sha256": "sha256 of the official archive's bytes; null until recorded from an official download "
                          "(scripts/make_manifest.py --official); verified when set",
        "workflows": dict(sorted(merged.items())),
    })
    for wf, e in sorted(new.items()):
        print(f"{wf}: {e['members']} run CSVs, members_sha256 {e['members_sha256'][:16]}...")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
