"""``fgclip-data``: FineHARD download / rename / check, ShareGPT4V check, FG-Shapes generation, shards, stores,
imports.

Every command shows a progress bar and ends with a summary of what it did and what it skipped (and why).
``--strict`` turns the first bad input into an error that names file, record and field.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from fgclip_data.report import DataError, Report


def _ints(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgclip-data", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True)

    finehard = groups.add_parser("finehard", help="FineHARD: download, rename, check").add_subparsers(
        dest="command", required=True
    )
    d = finehard.add_parser("download", help="download the images with img2dataset (resumable)")
    d.add_argument("--finehard-root", required=True, type=Path, help="folder with coyo_image_*/*.parquet")
    d.add_argument("--out", required=True, type=Path, help="download folder (e.g. data/down-grit-12m)")
    d.add_argument("--parents", type=_ints, default=None, help="coyo_image_{i} to fetch, e.g. 0-3,7 (default: all)")
    d.add_argument("--processes", type=int, default=None, help="img2dataset processes (default: CPU count)")
    d.add_argument("--threads", type=int, default=64, help="img2dataset threads per process")
    d.add_argument("--timeout", type=int, default=10)
    d.add_argument("--retries", type=int, default=0)
    d.add_argument(
        "--distributor",
        choices=("multiprocessing", "pyspark"),
        default="multiprocessing",
        help="img2dataset distributor: local processes, or a Spark cluster (start the SparkSession first)",
    )

    r = finehard.add_parser("rename", help="copy downloads to their canonical keys (url2key_jsons)")
    r.add_argument("--url2key", required=True, type=Path, help="FineHARD/url2key_jsons folder (or one file)")
    r.add_argument("--downloads", required=True, type=Path, help="the download folder")
    r.add_argument("--out", required=True, type=Path, help="canonical image root (e.g. data/grit-12m)")
    r.add_argument("--dry-run", action="store_true", help="count what would be copied; write nothing")
    r.add_argument("--link", action="store_true", help="hard-link instead of copying (same file system)")

    c = finehard.add_parser("check", help="validate records and find missing or corrupt images")
    c.add_argument("--data", required=True, type=Path, help="jsonfiles folder, a record file or a .txt listing")
    c.add_argument("--images", required=True, type=Path, help="image root that f_path resolves against")
    c.add_argument("--negatives", type=int, default=10, help="hard negatives required per box (0: any)")
    c.add_argument("--strict", action="store_true")

    share = groups.add_parser("sharegpt4v", help="ShareGPT4V").add_subparsers(dest="command", required=True)
    s = share.add_parser("check", help="report records whose image is missing under the data/ tree")
    s.add_argument("--json", required=True, type=Path, help="share-captioner_coco_lcs_sam_1246k_1107.json")
    s.add_argument("--data-root", required=True, type=Path, help="the ShareGPT4V data/ folder")
    s.add_argument("--missing-out", type=Path, default=None, help="write the missing image paths here")
    s.add_argument("--strict", action="store_true")

    v = share.add_parser("convert", help="write FineHARD-format train.jsonl / val.jsonl (first 1000) records")
    v.add_argument("--json", required=True, type=Path, help="share-captioner_coco_lcs_sam_1246k_1107.json")
    v.add_argument("--out", required=True, type=Path, help="folder for train.jsonl and val.jsonl")
    v.add_argument("--val-size", type=int, default=1000)

    shapes = groups.add_parser("fgshapes", help="FG-Shapes").add_subparsers(dest="command", required=True)
    g = shapes.add_parser("generate", help="write a deterministic FineHARD-format set of coloured shapes")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--n", type=int, default=10_000, help="number of images")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--lang", choices=["en", "zh", "both"], default="en", help="caption language(s)")
    g.add_argument("--min-size", type=int, default=64, help="smallest image side in pixels")
    g.add_argument("--max-size", type=int, default=224, help="largest image side in pixels")
    g.add_argument("--val-fraction", type=float, default=0.1)
    g.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    g.add_argument("--force", action="store_true", help="regenerate even if OUT holds the same set")

    shards = groups.add_parser("shards", help="WebDataset tar shards").add_subparsers(dest="command", required=True)
    w = shards.add_parser("write", help="FineHARD-format records + images -> tar shards with a manifest (resumable)")
    w.add_argument("--data", required=True, type=Path, help="record file, jsonfiles folder or .txt listing")
    w.add_argument("--images", required=True, type=Path, help="image root that f_path resolves against")
    w.add_argument("--out", required=True, type=Path, help="shard folder (rerun to resume)")
    w.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    vf = shards.add_parser("verify", help="re-hash every shard against the manifest")
    vf.add_argument("--out", required=True, type=Path, help="shard folder")
    _add_import_parsers(groups)

    store = groups.add_parser("store", help="memory-mapped record store").add_subparsers(dest="command", required=True)
    sb = store.add_parser("build", help="FineHARD-format record files -> an Arrow record store (resumable)")
    sb.add_argument("sources", nargs="+", type=Path, help="record files, jsonfiles folders or .txt listings")
    sb.add_argument("--out", required=True, type=Path, help="store folder (rerun to resume)")
    sb.add_argument("--batch-rows", type=int, default=16_384, help="rows per Arrow record batch")
    sb.add_argument("--part-rows", type=int, default=262_144, help="rows per part file (the unit of resumption)")
    sb.add_argument("--workers", type=int, default=1, help="processes parsing source files in parallel")
    sb.add_argument("--strict", action="store_true")
    sv = store.add_parser("verify", help="re-hash the parts and re-fingerprint the sources against the manifest")
    sv.add_argument("store", type=Path)
    return parser


def _val_size(text: str) -> float:
    value = float(text)
    if value < 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(f"a count (>= 1) or a fraction (< 1), got {text!r}")
    return value


def _count(text: str, least: int = 0) -> int:
    value = int(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {text!r}")
    return value


def _add_import_parsers(groups) -> None:
    from fgclip_data.importers import SOURCES

    sources = groups.add_parser(
        "import", help="your own data -> FineHARD records + a seeded train/val split (resumable)"
    ).add_subparsers(dest="command", required=True)
    for name, source in SOURCES.items():
        p = sources.add_parser(name, help=source.help, description=source.help)
        source.add_arguments(p)
        p.add_argument("--out", required=True, type=Path, help="output folder (rerun the same import to resume)")
        p.add_argument("--val-size", type=_val_size, default=0.1, help="validation items: count or fraction")
        p.add_argument("--seed", type=int, default=0, help="seeds the split and the hard negatives")
        p.add_argument("--negatives", type=_count, default=10, help="hard negatives per box (0: none)")
        p.add_argument("--categories", type=Path, default=None, help="file of category names (one a line) to swap")
        p.add_argument("--link", action="store_true", help="hard-link images instead of copying them")
        p.add_argument("--chinese", action="store_true", help="Chinese captions: records marked is_cn (FG-CLIP 2)")
        p.add_argument(
            "--chunk-size", type=lambda t: _count(t, 1), default=1000, help="items per written chunk (unit of resuming)"
        )
        p.add_argument("--strict", action="store_true", help="stop at the first bad item")


def _bar(total: int | None, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def _download(args) -> int:
    from fgclip_data.finehard.download import DownloadOptions, checked_url_lists, download

    options = DownloadOptions(
        threads=args.threads, timeout=args.timeout, retries=args.retries, distributor=args.distributor
    )
    if args.processes:
        options.processes = args.processes
    report = Report()
    lists = checked_url_lists(args.finehard_root, args.parents)  # a damaged list: one line before any download
    with _bar(len(lists), "url lists", "list") as bar:
        download(args.finehard_root, args.out, options, args.parents, report, bar.update)
    print(report.summary("finehard download"))
    return 0


def _rename(args) -> int:
    from fgclip_data.finehard.rename import rename

    with _bar(None, "downloads", "img") as bar:
        report = rename(args.url2key, args.downloads, args.out, args.dry_run, args.link, progress=bar.update)
    print(report.summary("finehard rename" + (" (dry run)" if args.dry_run else "")))
    return 0


def _check(args) -> int:
    import random

    from fgclip_data.finehard.paths import resolve_image_path
    from fgclip_data.finehard.reader import iter_records
    from fgclip_data.finehard.samples import SampleOptions, build_regions, load_image, unusable
    from fgclip_data.report import where

    report = Report(strict=args.strict)
    options = SampleOptions(negatives=args.negatives or None, max_boxes=1 << 30)
    with _bar(None, "records", "rec") as bar:
        for ref in iter_records(args.data, report):
            bar.update(1)
            at = where(ref.file, ref.index)
            if (problem := unusable(ref.record)) is not None:
                report.problem(problem[0], ref.file, ref.index, problem[1])
            build_regions(ref.record, options, random.Random(0), report, at)
            try:
                path = resolve_image_path(ref.record.f_path, args.images)
            except ValueError as err:
                report.problem(str(err), ref.file, ref.index, "f_path")
                continue
            if load_image(path, report, at) is not None:
                report.count("images ok")
    print(report.summary("finehard check"))
    return 1 if report.skipped else 0


def _sharegpt4v_check(args) -> int:
    from fgclip_data.sharegpt4v import check

    report = Report(strict=args.strict)
    out = open(args.missing_out, "w") if args.missing_out else None  # noqa: SIM115
    try:
        check(args.json, args.data_root, report, out)
    finally:
        if out:
            out.close()
    print(report.summary("sharegpt4v check"))
    return 1 if report.skipped else 0


def _sharegpt4v_convert(args) -> int:
    from fgclip_data.sharegpt4v import convert

    report = convert(args.json, args.out, val_size=args.val_size)
    print(report.summary("sharegpt4v convert"))
    return 0


def _generate(args) -> int:
    from fgclip_data.fgshapes.generate import GenerateOptions, generate

    options = GenerateOptions(
        n=args.n,
        seed=args.seed,
        lang=args.lang,
        min_size=args.min_size,
        max_size=args.max_size,
        val_fraction=args.val_fraction,
    )
    if args.workers:
        options.workers = args.workers
    with _bar(args.n, "fg-shapes", "img") as bar:
        manifest = generate(args.out, options, force=args.force, progress=bar.update)
    report = Report()
    for split, n in manifest["counts"].items():
        report.count(f"{split} images", n)
    report.count("boxes", manifest["boxes"])
    print(report.summary("fgshapes generate" + (" (already there, reused)" if manifest.get("reused") else "")))
    print(f"records: {', '.join(str(args.out / f) for files in manifest['jsonfiles'].values() for f in files)}")
    return 0


def _shards_write(args) -> int:
    from fgclip_data.shards import write_shards

    report = Report()
    with _bar(None, "shards", "sample") as bar:
        manifest = write_shards(
            args.data, args.images, args.out, args.shard_size, report, progress=lambda n: bar.update(n - bar.n)
        )
    print(report.summary("shards write"))
    print(f"manifest: {args.out / 'manifest.json'} ({manifest.samples} samples in {len(manifest.shards)} shards)")
    return 0


def _import(args) -> int:
    from fgclip_data.importers import SOURCES, ImportOptions, run_import

    categories = []
    if args.categories:
        if not args.categories.is_file():
            raise DataError("categories file not found", str(args.categories))
        categories = [line.strip() for line in args.categories.read_text(encoding="utf-8").splitlines() if line.strip()]
    options = ImportOptions(
        negatives=args.negatives,
        seed=args.seed,
        categories=categories,
        val_size=args.val_size,
        chunk_size=args.chunk_size,
        link=args.link,
        chinese=args.chinese,
    )
    source = SOURCES[args.command].from_args(args)
    report = Report(strict=args.strict)
    with _bar(None, f"import {args.command}", "item") as bar:
        manifest = run_import(
            source, args.out, options, report, progress=bar.update, on_total=lambda n: setattr(bar, "total", n)
        )
    print(report.summary(f"import {args.command}" + (" (resumed)" if manifest["resumed"] else "")))
    counts = manifest["counts"]
    print(
        f"records: {args.out / 'jsonfiles' / 'train'} ({counts['train']}), {args.out / 'jsonfiles' / 'val'} "
        f"({counts['val']}); images: {args.out / 'images'}; report: {args.out / 'report.json'}"
    )
    return 0


def _shards_verify(args) -> int:
    from fgclip_data.shards import verify_shards

    problems = verify_shards(args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"shards verify: {'all shards match the manifest' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _store_build(args) -> int:
    from fgclip_data.store import build_store

    report = Report(strict=args.strict)
    with _bar(None, "records", "rec") as bar:
        manifest = build_store(
            args.sources, args.out, args.batch_rows, args.part_rows, report, bar.update, workers=args.workers
        )
    print(report.summary("store build"))
    print(f"manifest: {args.out / 'manifest.json'} ({manifest.rows} records in {len(manifest.parts)} parts)")
    return 0


def _store_verify(args) -> int:
    from fgclip_data.store import verify_store

    problems = verify_store(args.store)
    for problem in problems:
        print(f"fgclip-data: error: {problem}", file=sys.stderr)
    print(f"store verify: {'the store matches its manifest' if not problems else f'{len(problems)} problem(s)'}")
    return 2 if problems else 0


COMMANDS = {
    ("store", "build"): _store_build,
    ("store", "verify"): _store_verify,
    ("shards", "write"): _shards_write,
    ("shards", "verify"): _shards_verify,
    ("finehard", "download"): _download,
    ("finehard", "rename"): _rename,
    ("finehard", "check"): _check,
    ("sharegpt4v", "check"): _sharegpt4v_check,
    ("sharegpt4v", "convert"): _sharegpt4v_convert,
    ("fgshapes", "generate"): _generate,
}


def _import_commands() -> dict:
    from fgclip_data.importers import SOURCES

    return {("import", name): _import for name in SOURCES}


COMMANDS.update(_import_commands())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[(args.group, args.command)](args)
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"fgclip-data: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
