"""Benchmark of the predictor: set_image, one-prompt predict, peak memory, fp32 vs bf16.

    .venv/bin/python benchmarks/bench_predictor.py            # full run (~15 min on 2 cores)
    .venv/bin/python benchmarks/bench_predictor.py --quick    # no vit_b bf16, no vit_b baseline
    .venv/bin/python benchmarks/bench_predictor.py --render benchmarks/results/X.json

Every measurement runs in a fresh subprocess (this script re-invoked with `--one CASE`) so its
peak RSS is its own. Results go to benchmarks/results/<cpu>-<date-time>.json and a markdown
table is printed. The same-machine baseline is benchmarks/baseline_explicit.py. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(os.environ.get("SAMSCOPE_DATA", SHARED / "data"))
REFERENCE = Path(os.environ.get("SAMSCOPE_REFERENCE", SHARED / "reference"))
RESULTS = Path(__file__).resolve().parent / "results"
RESULT_MARK = "@@RESULT "
TUNED_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"}

IMAGES = {
    # 1040x1388 fluorescence nuclei (gray), 14 nuclei; official MobileSAM embedding in reference
    "nuclei_1040x1388": {
        "path": "dsb2018_fluo_dev/images/c901794d1a421d52.png",
        "labels": "dsb2018_fluo_dev/labels/c901794d1a421d52.tif",
        "reference_vit_t": 1,  # index into mobilesam_prompts.npz["embeddings"]
    },
    # COCO 640x480 RGB, the image of the official random-weight ViT-B reference run
    "coco_640x480": {
        "path": "coco_val2017_multi/images/000000074646.jpg",
        "instances": "coco_val2017_multi/instances/000000074646.npz",
        "reference_vit_b": "random_vit_b.npz",
    },
    # 512x512 electron microscopy slice (gray)
    "em_512x512": {"path": "isbi2012_em_membranes/images/slice_00.png"},
}
MAX_POINTS = {"nuclei_1040x1388": 14, "coco_640x480": 6}  # ~20 single-point prompts in all

# Official figures (PERF-NOTES.md): official segment-anything/MobileSAM code on 2 cores of an
# Intel Xeon with AVX-512, AVX512-BF16 and AMX -- NOT this machine. For scale only.
OFFICIAL_OTHER_CPU = [
    ("MobileSAM (vit_t) encoder 1024²", "2.10 s", "1.69 s"),
    ("MobileSAM set_image, GLIBC_TUNABLES set", "2.07 s → 1.35 s", "—"),
    ("SAM ViT-B encoder", "15.1 s", "8.2 s"),
    ("MobileSAM predict, 1 point → 3 masks at image size", "118 ms", "—"),
]


# =================================================================================== inputs
def read_image(name: str) -> np.ndarray:
    """RGB uint8, as the official code reads images (grayscale stacked to 3 channels)."""
    from PIL import Image

    return np.asarray(Image.open(DATA / IMAGES[name]["path"]).convert("RGB"))


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of `mask` farthest from its border."""
    from scipy import ndimage

    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    crop = np.pad(mask[y0 : ys.max() + 1, x0 : xs.max() + 1], 1)
    dist = ndimage.distance_transform_edt(crop)
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return int(x0 + x - 1), int(y0 + y - 1)


def object_points(name: str) -> list[tuple[int, int]]:
    """Interior-most pixels of ground-truth objects (largest first), at most MAX_POINTS."""
    spec, limit = IMAGES[name], MAX_POINTS.get(name, 0)
    if "labels" in spec:
        import tifffile

        labels = tifffile.imread(DATA / spec["labels"])
        masks = [labels == i for i in np.unique(labels) if i != 0]
    elif "instances" in spec:
        z = np.load(DATA / spec["instances"])
        masks = [m for m, crowd in zip(z["masks"], z["iscrowd"], strict=True) if not crowd]
    else:
        return []
    masks.sort(key=lambda m: -int(m.sum()))
    return [interior_point(m) for m in masks[:limit]]


def build_model(arch: str):
    """vit_t: the real MobileSAM weights; others: deterministic random weights (reference)."""
    from sam_core import build_sam, load_model

    if arch == "vit_t":
        return load_model("vit_t")
    spec = importlib.util.spec_from_file_location("random_weights", REFERENCE / "random_weights.py")
    random_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(random_weights)
    model = build_sam(arch)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_weights.make_state_dict(shapes))
    model.name = arch
    return model.eval()


# ============================================================================ child process
def timed(fn, n: int, warmup: int, budget_s: float = 0.0, min_runs: int = 1) -> dict:
    """Wall and CPU time of `fn`: `warmup` untimed calls, then up to `n` timed ones.

    budget_s > 0: stop early once the timed calls took that long (but run `min_runs`).
    """
    first = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t0)
    wall, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if budget_s and len(wall) >= min_runs and sum(wall) > budget_s:
            break
    return {
        "median_s": statistics.median(wall),
        "p90_s": float(np.percentile(wall, 90)),
        "min_s": min(wall),
        "cpu_median_s": statistics.median(cpu),
        "n": len(wall),
        "runs_s": wall,
        "warmup_s": first,
    }


def paired(fn, model, rounds: int, **patch) -> dict:
    """Ours and the baseline alternately in this process: a speed-up robust to load drift.

    Returns both time lists and the median of the per-round ratios baseline / ours.
    """
    import contextlib

    from baseline_explicit import explicit_baseline

    fn()  # warm-up of our (unpatched) path in this process
    ours, base = [], []
    for i in range(rounds):
        for patched in (False, True) if i % 2 == 0 else (True, False):
            ctx = explicit_baseline(model, **patch) if patched else contextlib.nullcontext()
            with ctx:
                t0 = time.perf_counter()
                fn()
                (base if patched else ours).append(time.perf_counter() - t0)
    ratios = [b / o for o, b in zip(ours, base, strict=True)]
    return {"ours_s": ours, "baseline_s": base, "speedup": statistics.median(ratios)}


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_set_image(case: dict) -> dict:
    import torch

    from sam_core import Predictor

    model = build_model(case["model"])
    predictor = Predictor(model, precision=case["precision"])
    image = read_image(case["image"])
    rss_loaded = maxrss_mib()
    result: dict = {"rss_after_load_mib": rss_loaded}

    def embed() -> None:
        predictor.set_image(image)

    if case["baseline"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from baseline_explicit import explicit_baseline

        with explicit_baseline(model, attention=True, upsampling=False) as report:
            result["timing"] = timed(embed, case["n"], case["warmup"], case["budget_s"])
        result["patched"], result["patch_calls"] = report.patched, report.calls
        if report.calls["attention"] == 0:
            raise RuntimeError("baseline attention was never called: the patch did not apply")
    else:
        result["timing"] = timed(embed, case["n"], case["warmup"], case["budget_s"])
    result["peak_rss_mib"] = maxrss_mib()
    result["threads"] = torch.get_num_threads()

    save = Path(case["save"])
    np.save(save.with_suffix(".emb.npy"), predictor.embedding.features.float().numpy())
    if case["baseline"] and case.get("paired"):
        patch = {"attention": True, "upsampling": False}
        result["paired"] = paired(embed, model, case["paired"], **patch)
    if case.get("points") and not case["baseline"]:
        points = object_points(case["image"])
        masks, scores = [], []
        for x, y in points:
            m, s, _ = predictor.predict(points=[[x, y]], labels=[1])
            masks.append(m)
            scores.append(s)
        np.savez_compressed(
            save.with_suffix(".pred.npz"),
            masks=np.packbits(np.stack(masks), axis=-1),
            width=image.shape[1],
            scores=np.stack(scores),
            points=np.array(points),
        )
    return result


def grid_boxes(h: int, w: int, count: int) -> np.ndarray:
    """`count` (a square number) boxes: the cells of a grid over the image, shrunk by 20%."""
    side = round(count**0.5)
    ys, xs = np.linspace(0, h, side + 1), np.linspace(0, w, side + 1)
    boxes = []
    for i in range(side):
        for j in range(side):
            dy, dx = 0.2 * (ys[i + 1] - ys[i]), 0.2 * (xs[j + 1] - xs[j])
            boxes.append([xs[j] + dx, ys[i] + dy, xs[j + 1] - dx, ys[i + 1] - dy])
    return np.array(boxes, dtype=np.float64)


def run_predict(case: dict) -> dict:
    import contextlib

    import torch

    from sam_core import Predictor
    from sam_core.prompts import build_prompts

    model = build_model("vit_t")
    predictor = Predictor(model)
    image = read_image(case["image"])
    predictor.set_image(image)  # untimed (our encoder in both modes)
    h, w = image.shape[:2]
    point = [[w // 2, h // 2]]
    geometry = predictor.embedding.geometry
    prompts = build_prompts(geometry, points=point, labels=[1])
    boxes = grid_boxes(h, w, case["batch"])
    n, warmup, budget = case["n"], case["warmup"], case["budget_s"]
    rss_loaded = maxrss_mib()

    context = contextlib.nullcontext()
    if case["baseline"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from baseline_explicit import explicit_baseline

        context = explicit_baseline(model, attention=False, upsampling=True)
    timings = {}
    with context as report:
        for key, call in (
            ("point_3_masks", lambda: predictor.predict(point, [1])),
            ("point_1_mask", lambda: predictor.predict(point, [1], multimask=False)),
            ("decoder_only", lambda: predictor.predict_low_res(prompts)),
        ):
            timings[key] = timed(call, n, warmup, budget, min_runs=10)
        rss_single = maxrss_mib()  # ru_maxrss only grows: this is the single-prompt peak
        if case["batch"]:
            timings["boxes_full"] = timed(
                lambda: predictor.predict(box=boxes, multimask=False), 10, 1, budget, min_runs=2
            )
    rss_end = maxrss_mib()  # before the paired rounds, which also run our path
    result_paired = {}
    if case["baseline"] and case.get("paired"):
        patch = {"attention": False, "upsampling": True}
        result_paired["point_3_masks"] = paired(
            lambda: predictor.predict(point, [1]), model, 20, **patch
        )
        if case["batch"]:
            result_paired["boxes_full"] = paired(
                lambda: predictor.predict(box=boxes, multimask=False), model, 2, **patch
            )
    result = {
        "timing": timings,
        "batch": len(boxes),
        "rss_after_load_mib": rss_loaded,
        "peak_rss_single_mib": rss_single,
        "peak_rss_mib": rss_end,
        "threads": torch.get_num_threads(),
    }
    if result_paired:
        result["paired"] = result_paired
    if report is not None:
        result["patch_calls"] = report.calls
        if report.calls["upsample"] == 0:
            raise RuntimeError("baseline upsampling was never called: the patch did not apply")
    return result


def code_fingerprint() -> str:
    """Hash of the sam_core sources this process imported (others edit core/ concurrently)."""
    import hashlib

    import sam_core

    digest = hashlib.sha256()
    for path in sorted(Path(sam_core.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_one(case: dict) -> None:
    import torch

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    fingerprint = code_fingerprint()
    t0 = time.perf_counter()
    result = run_set_image(case) if case["kind"] == "set_image" else run_predict(case)
    result["code_fingerprint"] = fingerprint
    result["case_wall_s"] = time.perf_counter() - t0
    result["loadavg_1m"] = [load_before, os.getloadavg()[0]]
    print(RESULT_MARK + json.dumps(result), flush=True)


# ============================================================================ parent process
def machine_info() -> dict:
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        lscpu_model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    except OSError:
        lscpu_model = None
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "fma"]

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
            return out.stdout.strip()
        except OSError:
            return ""

    return {
        "hostname": socket.gethostname(),
        "cpu_model": (lscpu_model or model).group(1).strip() if (lscpu_model or model) else "?",
        "cpus": os.cpu_count(),
        "flags": {f: f in flags for f in wanted},
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "core_modified": bool(git("status", "--porcelain", "--", "core")),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()),
    }


def plan(args: argparse.Namespace) -> list[dict]:
    """The cases of this run, in order."""
    cases = []
    models = args.models.split(",")
    baselines = [False] if args.no_baseline else [False, True]
    for arch in models:
        images = ["nuclei_1040x1388", "coco_640x480"] if arch == "vit_t" else ["coco_640x480"]
        for precision in ("fp32", "bf16"):
            for image in images:
                for baseline in baselines:
                    if baseline and precision == "bf16":
                        continue  # baseline bf16 would be emulated on AVX2 too; fp32 only
                    if arch != "vit_t" and (precision == "bf16" or baseline) and args.quick:
                        continue
                    if arch == "vit_t":
                        n = args.n_vit_t if precision == "fp32" else args.n_bf16_vit_t
                        warmup = 1
                    elif precision == "fp32":
                        n, warmup = args.n_vit_b, 1
                    else:  # vit_b bf16: ~60 s per run on AVX2 (bf16 emulated): 1 cold run
                        n, warmup = 1, 0
                    cases.append(
                        {
                            "kind": "set_image",
                            "model": arch,
                            "precision": precision,
                            "image": image,
                            "baseline": baseline,
                            "n": n,
                            "warmup": warmup,
                            "budget_s": args.budget,
                            "paired": min(n, args.paired if arch == "vit_t" else 2),
                            "points": arch == "vit_t",
                            "tuned": False,
                        }
                    )
    if args.env_tuned:  # each tuned run right after its plain pair, so load drifts hit both
        ordered = []
        for i, case in enumerate(cases):
            ordered.append(case)
            last_of_pair = i + 1 == len(cases) or not cases[i + 1]["baseline"]
            if last_of_pair and case["precision"] == "fp32":  # bf16: compute-bound, emulated
                pair = [c for c in cases[: i + 1] if _same_setting(c, case)]
                ordered += [{**c, "tuned": True, "points": False} for c in pair]
        cases = ordered
    if not args.no_predict:
        for image in ("em_512x512", "nuclei_1040x1388"):
            for baseline in baselines:
                cases.append(
                    {
                        "kind": "predict",
                        "image": image,
                        "baseline": baseline,
                        "n": args.n_predict,
                        "warmup": 3,
                        "budget_s": args.predict_budget,
                        "paired": args.paired,
                        "batch": args.batch if image == "nuclei_1040x1388" else 0,
                        "tuned": False,
                    }
                )
    for case in cases:
        case["threads"] = args.threads
        case["id"] = case_id(case)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c["id"])]
    return cases


def _same_setting(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("kind", "model", "precision", "image"))


def case_id(case: dict) -> str:
    parts = [case["kind"]]
    if case["kind"] == "set_image":
        parts += [case["model"], case["precision"]]
    parts.append(case["image"])
    parts.append("baseline" if case["baseline"] else "ours")
    if case["tuned"]:
        parts.append("tuned")
    return "/".join(parts)


def run_case(case: dict, workdir: Path, timeout: float) -> dict:
    case = {**case, "save": str(workdir / case["id"].replace("/", "__"))}
    env = dict(os.environ)
    if case["tuned"]:
        env.update(TUNED_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(case)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    took = time.perf_counter() - t0
    return {"error": f"exit {proc.returncode} after {took:.0f} s: " + " | ".join(tail)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _load_pred(path: Path) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(path)
    masks = np.unpackbits(z["masks"], axis=-1)[..., : int(z["width"])].astype(bool)
    return masks, z["scores"]


def agreement(cases: list[dict], results: dict, workdir: Path) -> list[dict]:
    """bf16 vs fp32, baseline vs ours, ours vs the official reference embeddings."""
    rows = []
    by_id = {c["id"]: c for c in cases}

    def saved(cid: str, suffix: str) -> Path | None:
        if cid not in by_id or "error" in results.get(cid, {"error": 1}):
            return None
        path = workdir / (cid.replace("/", "__") + suffix)
        return path if path.exists() else None

    for arch in ("vit_t", "vit_b"):
        for image in ("nuclei_1040x1388", "coco_640x480"):
            fp32_id = f"set_image/{arch}/fp32/{image}/ours"
            emb32 = saved(fp32_id, ".emb.npy")
            if emb32 is None:
                continue
            e32 = np.load(emb32)
            row: dict = {"model": arch, "image": image}
            emb16 = saved(f"set_image/{arch}/bf16/{image}/ours", ".emb.npy")
            if emb16 is not None:
                row["bf16_cosine"] = _cosine(e32, np.load(emb16))
            p32 = saved(fp32_id, ".pred.npz")
            p16 = saved(f"set_image/{arch}/bf16/{image}/ours", ".pred.npz")
            if p32 is not None and p16 is not None:
                (m32, s32), (m16, s16) = _load_pred(p32), _load_pred(p16)
                inter = (m32 & m16).sum((-2, -1))
                union = (m32 | m16).sum((-2, -1))
                iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)  # (points, 3)
                row["bf16_mask_iou"] = iou.tolist()
                best = s32.argmax(-1)  # the mask a user would take: fp32's top score
                row["bf16_top_mask_iou"] = iou[np.arange(len(best)), best].tolist()
                row["bf16_top_choice_same"] = float((s16.argmax(-1) == best).mean())
                row["bf16_max_score_diff"] = float(np.abs(s32 - s16).max())
            emb_base = saved(f"set_image/{arch}/fp32/{image}/baseline", ".emb.npy")
            if emb_base is not None:
                eb = np.load(emb_base)
                row["baseline_max_abs_diff"] = float(np.abs(e32 - eb).max())
                row["baseline_allclose"] = bool(np.allclose(e32, eb, atol=1e-4, rtol=1e-3))
            ref = official_embedding(arch, image)
            if ref is not None:
                row["official_max_abs_diff"] = float(np.abs(e32 - ref).max())
                row["official_cosine"] = _cosine(e32, ref)
            rows.append(row)
    return rows


def official_embedding(arch: str, image: str) -> np.ndarray | None:
    spec = IMAGES[image]
    if arch == "vit_t" and "reference_vit_t" in spec:
        z = np.load(REFERENCE / "mobilesam_prompts.npz")
        return z["embeddings"][spec["reference_vit_t"]].astype(np.float32)  # stored float16
    if arch == "vit_b" and "reference_vit_b" in spec:
        return np.load(REFERENCE / spec["reference_vit_b"])["embedding"]
    return None


# =================================================================================== report
def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def _speedup(ours: dict, base: dict | None, fmt: str, key: str | None = None) -> str:
    """'paired (of medians)': the paired ratio is measured in one process, robust to load."""
    if not base:
        return "—"
    t, b = ours["timing"], base["timing"]
    if key is not None:
        t, b = t[key], b.get(key)
        if b is None:
            return "—"
    of_medians = fmt.format(b["median_s"] / t["median_s"])
    pair = base.get("paired")
    if pair and key is not None:
        pair = pair.get(key)
    if pair and "speedup" in pair:
        return f"{fmt.format(pair['speedup'])} ({of_medians})"
    return f"({of_medians})"


def render(report: dict) -> str:
    m = report["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
    results = report["results"]
    out = [
        f"**Machine**: {m['cpu_model']}, {m['cpus']} CPUs, torch {m['torch']} "
        f"({m['torch_cpu_capability']}), {m['threads']} threads; {flags}. "
        f"Commit {m['git_commit']}{' + local core/ changes' if m['core_modified'] else ''}, "
        f"{m['date']}; load average at start {m['loadavg_start'][0]:.1f}.",
        "",
    ]
    loads = [r["loadavg_1m"][0] for r in results.values() if "loadavg_1m" in r]
    loads.append(m["loadavg_start"][0])
    # The benchmark itself keeps ~threads CPUs busy; more than cpus + 1 means other work.
    if max(loads) > (m["cpus"] or 1) + 1:
        out += [
            f"> The machine was busy (1-min load average up to {max(loads):.1f} on {m['cpus']} "
            "CPUs, shown per case; the benchmark itself accounts for about 2): timings are "
            "inflated and noisy. Trust the paired speed-ups more than the medians.",
            "",
        ]
    prints = {r["code_fingerprint"] for r in results.values() if "code_fingerprint" in r}
    if len(prints) > 1:
        out += [
            f"> core/ changed during the run ({len(prints)} versions of the sources): cases "
            "measured different code. Re-run when nobody is editing core/.",
            "",
        ]

    def get(cid: str) -> dict | None:
        r = results.get(cid)
        return r if r and "error" not in r else None

    # ---- set_image
    out += [
        "### set_image (encoder + preprocessing), seconds",
        "",
        "| model | precision | image | ours median (min) | ours CPU s | runs | baseline median "
        "| speed-up: paired (of medians) | peak RSS ours / baseline MiB "
        "| with GLIBC_TUNABLES ours / baseline | load ours / baseline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in report["cases"]:
        if case["kind"] != "set_image" or case["baseline"] or case["tuned"]:
            continue
        cid = case["id"]
        ours, base = get(cid), get(cid.replace("/ours", "/baseline"))
        tuned, base_tuned = get(cid + "/tuned"), get(cid.replace("/ours", "/baseline") + "/tuned")
        if ours is None:
            out.append(
                f"| {case['model']} | {case['precision']} | {case['image']} | "
                f"error: {results.get(cid, {}).get('error', '?')[:80]} |||||||"
            )
            continue
        t = ours["timing"]
        runs = f"{len(t['runs_s'])}" + (" (no warm-up)" if not t["warmup_s"] else " + 1 warm-up")
        speed = _speedup(ours, base, "{:.2f}×")
        rss = f"{ours['peak_rss_mib']:.0f} / " + (_f(base and base["peak_rss_mib"], "{:.0f}"))
        tuned_s = (
            " / ".join(_f(r and r["timing"]["median_s"]) for r in (tuned, base_tuned))
            if (tuned or base_tuned)
            else "—"
        )
        if base_tuned and "paired" in base_tuned:
            tuned_s += f" (paired {base_tuned['paired']['speedup']:.2f}×)"
        out.append(
            f"| {case['model']} | {case['precision']} | {case['image']} | "
            f"{t['median_s']:.2f} ({t['min_s']:.2f}) | {t['cpu_median_s']:.2f} | {runs} | "
            f"{_f(base and base['timing']['median_s'])} | {speed} | {rss} | "
            f"{tuned_s} | {_f(ours['loadavg_1m'][0], '{:.1f}')} / "
            f"{_f(base and base['loadavg_1m'][0], '{:.1f}')} |"
        )
    out += [""]

    # ---- agreement
    if report["agreement"]:
        out += [
            "### Agreement",
            "",
            "| model | image | bf16 vs fp32 embedding cosine | bf16 vs fp32 mask IoU "
            "mean / min (points × 3 masks) | same, top-score mask only: mean / min | max abs "
            "score diff bf16 | ours vs baseline max abs diff (allclose) | ours fp32 vs official "
            "reference: max abs diff, cosine |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in report["agreement"]:
            iou = np.array(row.get("bf16_mask_iou", []))
            iou_s = f"{iou.mean():.4f} / {iou.min():.4f} ({iou.shape[0]} × 3)" if iou.size else "—"
            top = np.array(row.get("bf16_top_mask_iou", []))
            top_s = f"{top.mean():.4f} / {top.min():.4f}" if top.size else "—"
            base = "—"
            if "baseline_max_abs_diff" in row:
                same = "yes" if row["baseline_allclose"] else "NO"
                base = f"{row['baseline_max_abs_diff']:.1e} ({same})"
            off = (
                f"{row['official_max_abs_diff']:.1e}, {row['official_cosine']:.6f}"
                if "official_max_abs_diff" in row
                else "—"
            )
            out.append(
                f"| {row['model']} | {row['image']} | {_f(row.get('bf16_cosine'), '{:.6f}')} | "
                f"{iou_s} | {top_s} | {_f(row.get('bf16_max_score_diff'), '{:.4f}')} | {base} "
                f"| {off} |"
            )
        out += [""]

    # ---- predict
    labels = {
        "point_3_masks": "1 point → 3 masks at image size",
        "point_1_mask": "1 point, multimask=False",
        "decoder_only": "decoder only (predict_low_res, 3 low-res masks)",
        "boxes_full": "{batch} boxes in one call, 1 mask each at image size",
    }
    predict_cases = [c for c in report["cases"] if c["kind"] == "predict" and not c["baseline"]]
    if predict_cases:
        out += [
            "### predict (vit_t, fp32, after set_image), ms per call (batched: prompts/s)",
            "",
            "| image | call | ours median | ours p90 | baseline median | baseline p90 "
            "| speed-up: paired (of medians) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for case in predict_cases:
            ours, base = get(case["id"]), get(case["id"].replace("/ours", "/baseline"))
            if ours is None:
                error = results.get(case["id"], {}).get("error", "?")[:80]
                out.append(f"| {case['image']} | error: {error} ||||||")
                continue
            for key, label in labels.items():
                if key not in ours["timing"]:
                    continue
                t = ours["timing"][key]
                b = base["timing"].get(key) if base else None
                speed = _speedup(ours, base, "{:.1f}×", key)
                if key.startswith("boxes"):
                    n = ours["batch"]
                    cells = [
                        f"{t['median_s'] * 1e3:.0f} ms ({n / t['median_s']:.0f}/s)",
                        f"{t['p90_s'] * 1e3:.0f} ms",
                        f"{b['median_s'] * 1e3:.0f} ms ({n / b['median_s']:.0f}/s)" if b else "—",
                        f"{b['p90_s'] * 1e3:.0f} ms" if b else "—",
                    ]
                else:
                    cells = [
                        f"{t['median_s'] * 1e3:.1f}",
                        f"{t['p90_s'] * 1e3:.1f}",
                        _f(b and b["median_s"] * 1e3, "{:.1f}"),
                        _f(b and b["p90_s"] * 1e3, "{:.1f}"),
                    ]
                runs = f"n={t['n']}" + (f"/{b['n']}" if b else "")
                out.append(
                    f"| {case['image']} | {label.format(batch=ours['batch'])} ({runs}) | "
                    + " | ".join(cells)
                    + f" | {speed} |"
                )
            if ours["batch"]:
                what = f"peak RSS MiB, single prompts / with the {ours['batch']}-box batch"
                rss = [
                    f"{r['peak_rss_single_mib']:.0f} / {r['peak_rss_mib']:.0f}" if r else "—"
                    for r in (ours, base)
                ]
            else:
                what = "peak RSS MiB, single prompts"
                rss = [f"{r['peak_rss_single_mib']:.0f}" if r else "—" for r in (ours, base)]
            out.append(f"| {case['image']} | {what} | {rss[0]} | | {rss[1]} | | |")
        out += [""]

    # ---- targets
    out += ["### Targets (issue 2)", ""]
    for arch, image in (("vit_t", "nuclei_1040x1388"), ("vit_b", "coco_640x480")):
        enc = get(f"set_image/{arch}/fp32/{image}/ours")
        enc_base = get(f"set_image/{arch}/fp32/{image}/baseline")
        if enc and enc_base:
            ratio = enc_base["timing"]["median_s"] / enc["timing"]["median_s"]
            ratio = enc_base.get("paired", {}).get("speedup", ratio)
            out.append(
                f"- {arch} encoder ≥ 2× the explicit baseline (same machine, fp32): {ratio:.2f}× "
                f"{'✓' if ratio >= 2 else '✗'}"
            )
    pred = get("predict/nuclei_1040x1388/ours")
    if pred:
        ms = pred["timing"]["point_3_masks"]["median_s"] * 1e3
        out.append(
            f"- one prompt (1 point → 3 masks, 1040×1388) ≤ 10 ms median: {ms:.1f} ms "
            f"{'✓' if ms <= 10 else '✗'}"
        )
    out += [
        "",
        "### Official figures, measured on ANOTHER CPU (Intel Xeon, AVX-512/AMX; PERF-NOTES.md)",
        "",
        "For scale only: not comparable with the rows above.",
        "",
        "| what | fp32 | bf16 autocast |",
        "| --- | --- | --- |",
    ]
    out += [f"| {a} | {b} | {c} |" for a, b, c in OFFICIAL_OTHER_CPU]
    errors = {cid: r["error"] for cid, r in results.items() if "error" in r}
    if errors:
        out += ["", "**Errors**:", ""] + [f"- `{cid}`: {e}" for cid, e in errors.items()]
    return "\n".join(out)


def result_path(machine: dict) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", machine["cpu_model"].lower()).strip("-") or "cpu"
    slug = f"{slug}-{machine['cpus']}c"
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    return RESULTS / f"{slug}-{stamp}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip vit_b bf16 and vit_b baseline")
    parser.add_argument("--models", default="vit_t,vit_b", help="comma list (default vit_t,vit_b)")
    parser.add_argument("--n-vit-t", type=int, default=5, help="timed set_image runs, vit_t fp32")
    parser.add_argument("--n-bf16-vit-t", type=int, default=3, help="timed runs, vit_t bf16")
    parser.add_argument("--n-vit-b", type=int, default=3, help="timed runs, vit_b fp32 (bf16: 1)")
    parser.add_argument("--n-predict", type=int, default=50, help="timed runs per predict call")
    parser.add_argument("--batch", type=int, default=64, help="boxes in the batched call")
    parser.add_argument(
        "--budget",
        type=float,
        default=60,
        help="set_image: stop timing after this many seconds of runs (at least 1 run; 0: off)",
    )
    parser.add_argument(
        "--predict-budget",
        type=float,
        default=10,
        help="predict: seconds per call type (at least 10 runs, 2 for the batch; 0: off)",
    )
    parser.add_argument(
        "--paired",
        type=int,
        default=3,
        help="rounds of ours/baseline alternating in one process for the speed-up (0: off)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the explicit baseline")
    parser.add_argument("--no-predict", action="store_true", help="skip the predict cases")
    parser.add_argument(
        "--env-tuned", action="store_true", help="also run set_image with GLIBC_TUNABLES set"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--only", help="regex: run only cases whose id matches")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--out", type=Path, help="JSON path (default results/<cpu>-<date>.json)")
    parser.add_argument("--workdir", type=Path, help="keep embeddings/masks here (default: tmp)")
    parser.add_argument("--render", type=Path, help="print the table of an earlier JSON, exit")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        run_one(json.loads(args.one))
        return
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return

    machine = machine_info()
    cases = plan(args)
    results: dict = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="samscope-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for i, case in enumerate(cases, 1):
            t0 = time.perf_counter()
            print(f"[{i}/{len(cases)}] {case['id']} ...", end=" ", file=sys.stderr, flush=True)
            results[case["id"]] = run_case(case, workdir, args.timeout)
            r = results[case["id"]]
            status = r["error"] if "error" in r else _summary(r)
            print(f"{status} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        rows = agreement(cases, results, workdir)
    machine["loadavg_end"] = list(os.getloadavg())
    report = {
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "total_s": time.perf_counter() - started,
        "cases": cases,
        "results": results,
        "agreement": rows,
        "official_other_cpu": OFFICIAL_OTHER_CPU,
    }
    out = args.out or result_path(machine)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(render(report))
    print(f"\n(written to {out}; total {report['total_s'] / 60:.1f} min)")


def _summary(result: dict) -> str:
    t = result["timing"]
    if "median_s" in t:
        return f"median {t['median_s']:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB"
    return f"1 point {t['point_3_masks']['median_s'] * 1e3:.1f} ms"


if __name__ == "__main__":
    main()
