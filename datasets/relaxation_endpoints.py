#!/usr/bin/env python
"""Keep the start structure and the relaxed (last) frame of every relaxation of an OC20-layout LMDB.

Each system (``sid``) of the input contributes its first frame (lowest ``fid``) and its last
(highest ``fid``), in that order: what ``dequiformer relax-bench`` and the demo's relaxation act
need (start structures and the reference relaxed energy), at a fraction of the size.

Example:
    python datasets/relaxation_endpoints.py data/slab/emt_test.lmdb dequiformer/assets/demo/slab_heldout.lmdb
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from dequiformer.data.readers import frame_to_data_fields, read_dataset, write_oc20_lmdb
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dequiformer.data.readers import frame_to_data_fields, read_dataset, write_oc20_lmdb


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="OC20-layout LMDB whose frames carry sid and fid")
    p.add_argument("out", help="output .lmdb")
    args = p.parse_args(argv)
    ds = read_dataset(args.source)
    first, last = {}, {}
    for i in range(len(ds)):
        frame = ds[i]
        sid, fid = frame.info.get("sid"), frame.info.get("fid")
        if sid is None or fid is None:
            raise SystemExit(f"error: {args.source}: frame {i} has no sid/fid; not a relaxation data set")
        if sid not in first or fid < first[sid].info["fid"]:
            first[sid] = frame
        if sid not in last or fid > last[sid].info["fid"]:
            last[sid] = frame

    def entries():
        for sid in sorted(first):
            for frame in (first[sid], last[sid]):
                fields = frame_to_data_fields(frame, sid=sid, fid=frame.info["fid"])
                if frame.info.get("system"):
                    fields["system"] = frame.info["system"]
                yield fields

    count = write_oc20_lmdb(args.out, entries())
    print(f"wrote {args.out}: {count} frames from {len(first)} relaxations", file=sys.stderr)
    return Path(args.out)


if __name__ == "__main__":
    main()
