"""Scale benchmark of the record store against today's map-style path (read_records + FineHARDDataset).

Synthetic FineHARD-like records (a 120-word long caption, a short caption, 4 boxes each with 10 hard
negatives: about 3.4 KB of JSON each) are written as JSON arrays of 100 k records (FineHARD's ``jsonfiles/``
layout). Measured: build time, store size against the JSON, open time, proportional set size (PSS, from
/proc/PID/smaps_rollup: shared pages count once) of one rank and of 8 rank processes with 2 loader workers each,
and random-access records/s (record -> Sample, without the image decode). Today's path is measured at a
smaller N and extrapolated linearly; both are extrapolated to FineHARD's 12 M records.

    uv run python tools/perf/store.py --records 1000000 --baseline-records 100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from fgclip_model.machine import cpu_line, cpu_record

_WORDS = (
    "a the red blue green small large wooden metal old young man woman child dog cat car tree house street sky "
    "water field table chair window door light shadow left right front behind near under over holding wearing "
    "standing sitting walking running bright dark white black yellow brown grey round square tall short wide "
    "narrow stone glass plastic paper cloth leather shiny dull striped spotted plain painted broken clean"
)
WORDS = _WORDS.split()
FULL = 12_000_000


def synthetic_record(i: int, rng: random.Random) -> dict:
    """One FineHARD-like record (about 3.4 KB of JSON)."""

    def words(n: int) -> str:
        return " ".join(rng.choices(WORDS, k=n))

    boxes = []
    for _ in range(4):
        x, y = rng.random() * 0.5, rng.random() * 0.5
        short = words(5)
        boxes.append(
            {
                "bbox": [round(x, 4), round(y, 4), round(x + 0.3, 4), round(y + 0.4, 4), round(rng.random(), 3)],
                "short_expr": short,
                "long_expr": words(18),
                "flag_short_neg": 1,
                "short_expr_negs": {str(j): words(5) for j in range(10)},
            }
        )
    return {
        "f_path": f"coyo_image_{i // 1_000_000}/{i // 10_000 % 100:05d}/{i:09d}.jpg",
        "caption": words(120),
        "short_caption": words(12),
        "bbox_info": boxes,
    }


def generate(folder: Path, n: int, per_file: int = 100_000, seed: int = 0) -> list[Path]:
    """``n`` synthetic records as JSON arrays of ``per_file`` records in ``folder`` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / f"done-{n}-{per_file}-{seed}"
    files = [folder / f"part_{k:04d}.json" for k in range((n + per_file - 1) // per_file)]
    if done.is_file():
        return files
    rng = random.Random(seed)
    for k, file in enumerate(files):
        with file.open("w") as f:
            f.write("[")
            for i in range(k * per_file, min(n, (k + 1) * per_file)):
                f.write(("," if i > k * per_file else "") + json.dumps(synthetic_record(i, rng)))
            f.write("]")
    done.touch()
    return files


# ---------------------------------------------------------------------------------------------- measuring


def pss(pid: int | str = "self") -> dict[str, int]:
    """Pss, Pss_Anon and Pss_File of a process in bytes (/proc/PID/smaps_rollup)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Pss_Anon", "Pss_File", "Rss"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def open_dataset(kind: str, path: str):
    """The map-style dataset of one rank: today's FineHARDDataset (reads every record) or a FineHARDStore."""
    from fgclip_data import FineHARDDataset
    from fgclip_data.store.dataset import FineHARDStore

    if kind == "json":
        return FineHARDDataset(path, "/nonexistent-images")
    if kind == "store":
        data = FineHARDStore(path, "/nonexistent-images")
        data.reader.open()
        return data
    return None


class NoImage:
    """record -> Sample of a dataset, without the image decode (a 1x1 image stands in): what the measured
    random access costs beyond reading the JPEG."""

    def __init__(self, data) -> None:
        from PIL import Image

        from fgclip_data.report import where

        self.data, self.image, self.where = data, Image.new("RGB", (1, 1)), where
        self.record = data.records.__getitem__ if hasattr(data, "records") else data.reader.view

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        ref = self.record(i)
        return self.data.maker.build(ref.record, self.image, self.where(ref.file, ref.index), f"{ref.file}:{ref.index}")


def touch_pages(reader) -> float:
    """Map every page of a store into this process (one read per 4 KiB of each part), as a long-running rank or
    worker has after its first pass: the seconds it took."""
    import numpy as np
    import pyarrow as pa

    start = time.perf_counter()
    for part in reader.manifest.parts:
        with pa.memory_map(str(reader.folder / part.name)) as source:
            int(np.frombuffer(source.read_buffer(), np.uint8)[::4096].sum())
    return time.perf_counter() - start


def random_access(kind: str, path: str, n: int, seed: int = 0) -> dict:
    """Open time, records/s of record -> Sample (random order, one process) and the PSS it added."""
    import torch  # noqa: F401  (the rank's baseline includes what training imports)

    import fgclip_data.datasets
    import fgclip_data.store.dataset  # noqa: F401

    base = pss()
    start = time.perf_counter()
    data = open_dataset(kind, path)
    opened = time.perf_counter() - start
    after_open = pss()
    access = NoImage(data)
    rng = random.Random(seed)
    indices = [rng.randrange(len(access)) for _ in range(n)]

    def timed(indices: list[int]) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        for i in indices:
            access[i]
        return time.perf_counter() - start, time.process_time() - cpu

    seconds, cpu_seconds = timed(indices)  # cold: most accesses map a page of the store for the first time
    end = pss()
    warm = {}
    if kind == "store":  # warm: every page mapped once already, as in a rank or worker past its first pass
        touched = touch_pages(data.reader)
        again = timed([rng.randrange(len(access)) for _ in range(n)])
        warm = {"warm_records_per_s": n / again[0], "warm_records_per_cpu_s": n / again[1], "touch_s": touched}
    return {
        "kind": kind,
        "records": len(access),
        "open_s": opened,
        "accessed": n,
        "records_per_s": n / seconds,
        "records_per_cpu_s": n / cpu_seconds,
        "pss_added_open": after_open["Pss"] - base["Pss"],
        "pss_added": end["Pss"] - base["Pss"],
        "pss_anon_added": end["Pss_Anon"] - base["Pss_Anon"],
        "pss_file_added": end["Pss_File"] - base["Pss_File"],
        **warm,
    }


def _wait_for(folder: Path, name: str, count: int, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while len(list(folder.glob(f"{name}-*"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} {name} files in {folder}")
        time.sleep(0.2)


def rank_child(kind: str, path: str, rank: int, ranks: int, workers: int, per_rank: int, sync: Path) -> None:
    """One of ``ranks`` rank processes: its dataset and a DataLoader with ``workers`` forked workers reading
    ``per_rank`` random samples; when every rank is done, the PSS of this rank and its workers (all alive)."""
    import torch
    from torch.utils.data import DataLoader

    class Empty:
        def __len__(self):
            return per_rank

        def __getitem__(self, i):
            return 0

    data = open_dataset(kind, path)
    access = NoImage(data) if data is not None else Empty()
    g = torch.Generator().manual_seed(rank)
    sampler = torch.utils.data.RandomSampler(range(len(access)), num_samples=per_rank, generator=g)
    loader = DataLoader(
        access, batch_size=64, sampler=sampler, num_workers=workers, collate_fn=len, persistent_workers=workers > 0
    )
    seen = sum(iter(loader))
    (sync / f"done-{rank}").write_text(str(seen))
    _wait_for(sync, "done", ranks)
    time.sleep(1.0)
    me = os.getpid()
    rows = [pss(me)] + [pss(c) for c in children(me)]
    total = {k: sum(r.get(k, 0) for r in rows) for k in ("Pss", "Pss_Anon", "Pss_File")}
    (sync / f"result-{rank}").write_text(json.dumps({**total, "processes": len(rows), "seen": seen}))
    _wait_for(sync, "result", ranks)


def node(kind: str, path: str, ranks: int, workers: int, per_rank: int) -> dict:
    """``ranks`` rank processes with ``workers`` loader workers each: their summed PSS while all are alive."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sync = Path(tmp)
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--child", kind, path, str(r), str(ranks), str(workers), str(per_rank), tmp]
            )
            for r in range(ranks)
        ]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"rank process failed ({kind})")
        results = [json.loads((sync / f"result-{r}").read_text()) for r in range(ranks)]
    total = {k: sum(r[k] for r in results) for k in ("Pss", "Pss_Anon", "Pss_File")}
    return {"kind": kind, "ranks": ranks, "workers": workers, "per_rank": per_rank, **total,
            "processes": sum(r["processes"] for r in results)}  # fmt: skip


def tree_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths)


# ---------------------------------------------------------------------------------------------- the run


def _in_child(*args: str) -> dict:
    """A measurement in a fresh interpreter (open time and memory without this process's state)."""
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def build(json_folder: Path, store: Path, workers: int = 1) -> dict:
    import shutil

    from fgclip_data.store import build_store

    shutil.rmtree(store, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    manifest = build_store([json_folder], store, workers=workers)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    json_bytes = tree_bytes(json_folder.glob("*.json"))
    store_bytes = tree_bytes(store.glob("*.arrow"))
    return {
        "records": manifest.rows,
        "build_s": seconds,
        "build_records_per_s": manifest.rows / seconds,
        "build_records_per_cpu_s": manifest.rows / cpu_seconds,  # this process only (workers > 1: the writer)
        "workers": workers,
        "json_bytes": json_bytes,
        "store_bytes": store_bytes,
        "store_over_json": store_bytes / json_bytes,
    }


def measure(args) -> dict:
    work = Path(args.work)
    n, m = args.records, args.baseline_records
    print(f"generating {n} and {m} synthetic records in {work} ...", file=sys.stderr)
    big, small, tiny = work / f"json-{n}", work / f"json-{m}", work / f"json-{args.node_json_records}"
    generate(big, n)
    generate(small, m)
    generate(tiny, args.node_json_records)
    result: dict = {"cpu": cpu_record(), "records": n, "baseline_records": m, "full_size": FULL}
    result["node_json_records"] = args.node_json_records
    print("building the stores ...", file=sys.stderr)
    result["build"] = build(big, work / f"store-{n}", args.build_workers)
    result["build_small"] = build(small, work / f"store-{m}")
    print("one rank: open, random access, memory ...", file=sys.stderr)
    access = str(args.access)
    result["rank"] = {
        "store": _in_child("--access", "store", str(work / f"store-{n}"), access),
        "store_small": _in_child("--access", "store", str(work / f"store-{m}"), access),
        "json_small": _in_child("--access", "json", str(small), access),
    }
    if args.ranks:
        print(f"{args.ranks} ranks x {args.workers} workers ...", file=sys.stderr)
        per = str(args.per_rank)
        base = (str(args.ranks), str(args.workers), per)
        result["node"] = {
            "none": node("none", "", *map(int, base)),
            "store": node("store", str(work / f"store-{n}"), *map(int, base)),
            "store_small": node("store", str(work / f"store-{m}"), *map(int, base)),
            "json_small": node("json", str(tiny), *map(int, base)),
        }
    result["extrapolated"] = extrapolate(result)
    result["cpu"]["load_average_end"] = os.getloadavg()
    return result


def extrapolate(r: dict) -> dict:
    """Figures at FineHARD's 12 M records: the JSON path scales with the records (its parse time and objects),
    the store's build time and size too; the store's per-rank memory is measured not to grow (see rows) but the
    sampler adds its int32 permutation (4 bytes a sample)."""
    n, m, full = r["records"], r["baseline_records"], FULL
    json_rank, store_rank = r["rank"]["json_small"], r["rank"]["store"]
    out = {
        "json_open_s": json_rank["open_s"] * full / m,
        "json_rank_pss_bytes": json_rank["pss_added"] * full / m,
        "store_build_s": r["build"]["build_s"] * full / n,
        "store_bytes": r["build"]["store_bytes"] * full / n,
        "json_bytes": r["build"]["json_bytes"] * full / n,
        "store_open_s": store_rank["open_s"] * full / n,  # an upper bound: opening reads one footer per part
        "store_rank_anon_bytes": store_rank["pss_anon_added"] + 4 * full,
    }
    if "node" in r:
        ranks, none = r["node"]["none"]["ranks"], r["node"]["none"]
        json_node, store_node = r["node"]["json_small"], r["node"]["store"]
        out["json_node_per_rank_bytes"] = (json_node["Pss"] - none["Pss"]) / ranks * full / r["node_json_records"]
        out["store_node_per_rank_anon_bytes"] = (store_node["Pss_Anon"] - none["Pss_Anon"]) / ranks + 4 * full
    return out


def markdown(r: dict) -> str:
    mb = 1 << 20
    n, m = r["records"], r["baseline_records"]
    b, bs, rank, x = r["build"], r["build_small"], r["rank"], r["extrapolated"]
    lines = [
        cpu_line(r["cpu"]),
        "",
        "| measure | store | today's path (read_records + FineHARDDataset) |",
        "|---|---|---|",
        f"| build ({n:,} records, {b['workers']} processes) | {b['build_s']:.1f} s: "
        f"{b['build_records_per_s']:,.0f} records/s | — |",
        f"| build ({m:,} records, 1 process) | {bs['build_s']:.1f} s: {bs['build_records_per_s']:,.0f} records/s "
        f"({bs['build_records_per_cpu_s']:,.0f} per CPU second) | — |",
        f"| size | {b['store_bytes'] / mb:,.0f} MB ({b['store_over_json']:.2f} × the JSON) | "
        f"{b['json_bytes'] / mb:,.0f} MB of JSON |",
        f"| open (one rank) | {rank['store']['open_s']:.3f} s at {n:,} | "
        f"{rank['json_small']['open_s']:.1f} s at {m:,} |",
        f"| random access, record → Sample, one process, pages not yet mapped (cold) | "
        f"{rank['store']['records_per_s']:,.0f} /s ({rank['store']['records_per_cpu_s']:,.0f} per CPU second) | "
        f"{rank['json_small']['records_per_s']:,.0f} /s ({rank['json_small']['records_per_cpu_s']:,.0f} per CPU "
        "second) |",
        f"| random access, the same once every page is mapped (warm: a rank past its first pass) | "
        f"{rank['store']['warm_records_per_s']:,.0f} /s ({rank['store']['warm_records_per_cpu_s']:,.0f} per CPU "
        "second) | — |",
        f"| memory added, one rank (PSS; anonymous part) | {rank['store']['pss_added'] / mb:.0f} MB; "
        f"{rank['store']['pss_anon_added'] / mb:.0f} MB at {n:,} ({rank['store_small']['pss_anon_added'] / mb:.0f} MB "
        f"at {m:,}) | {rank['json_small']['pss_added'] / mb:.0f} MB; {rank['json_small']['pss_anon_added'] / mb:.0f}"
        f" MB at {m:,} |",
    ]
    if "node" in r:
        none, ranks = r["node"]["none"], r["node"]["none"]["ranks"]

        def added(row: dict, key: str) -> str:
            return f"{(row[key] - none[key]) / ranks / mb:.0f}"

        s, ss, j = r["node"]["store"], r["node"]["store_small"], r["node"]["json_small"]
        lines.append(
            f"| {ranks} ranks × {none['workers']} workers: PSS added per rank (anonymous) | {added(s, 'Pss')} MB "
            f"({added(s, 'Pss_Anon')} MB) at {n:,}; {added(ss, 'Pss')} MB ({added(ss, 'Pss_Anon')} MB) at {m:,} | "
            f"{added(j, 'Pss')} MB ({added(j, 'Pss_Anon')} MB) at {r['node_json_records']:,} |"
        )
    lines += [
        "",
        f"Extrapolated to {FULL:,} records: store build {x['store_build_s'] / 60:.0f} min, "
        f"{x['store_bytes'] / 2**30:.0f} GB (JSON {x['json_bytes'] / 2**30:.0f} GB), open ≤ {x['store_open_s']:.1f} s, "
        f"anonymous memory per rank {x['store_rank_anon_bytes'] / mb:.0f} MB (with the sampler's permutation); "
        f"today's path: {x['json_open_s'] / 60:.0f} min to read the records and "
        f"{x['json_rank_pss_bytes'] / 2**30:.0f} GB per rank"
        + (f" ({x['json_node_per_rank_bytes'] / 2**30:.0f} GB per rank with its 2 workers)" if "node" in r else ""),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--access":
        kind, path, n = argv[1], argv[2], int(argv[3])
        print(json.dumps(random_access(kind, path, n)))
        return 0
    if argv and argv[0] == "--child":
        kind, path, rank, ranks, workers, per_rank, sync = argv[1:8]
        rank_child(kind, path, int(rank), int(ranks), int(workers), int(per_rank), Path(sync))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the measured store")
    parser.add_argument("--baseline-records", type=int, default=100_000, help="records for today's path")
    parser.add_argument("--build-workers", type=int, default=2, help="processes parsing source files")
    parser.add_argument("--access", type=int, default=50_000, help="random accesses timed in one rank")
    parser.add_argument("--ranks", type=int, default=8, help="rank processes of the node measurement (0: skip)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers per rank")
    parser.add_argument("--per-rank", type=int, default=4096, help="random samples each rank reads")
    parser.add_argument(
        "--node-json-records", type=int, default=20_000, help="records of today's path in the node measurement"
    )
    parser.add_argument("--work", default="/tmp/fgclip-store-bench", help="folder for the JSON and the stores")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "store.json")
    args = parser.parse_args(argv)
    result = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
