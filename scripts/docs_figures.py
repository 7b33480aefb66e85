"""Write the figures of the docs from the committed JSON they come from, or check that the docs still say them.

A figure in a doc is written between markers, `<!-- fig:accuracy_int8 -->95.36%<!-- /fig -->`; `FIGURES` says which
JSON file and which value each name is, and how it is written. The docs: README.md (made from nbs/index.ipynb, which
holds the markers too), CHANGELOG.md and docs/*.md.

    python scripts/docs_figures.py            # rewrite every marked figure from its JSON (make docs)
    python scripts/docs_figures.py --check    # exit 1, naming doc, figure and both values, when one differs
"""

import argparse
import json
import re
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- fig:([a-z0-9_]+) -->(.*?)<!-- /fig -->")

METRICS = "reports/fashioncat/metrics.json"  # fashioncat_evaluate of the served int8 model
EXPORT = "models/export_report.json"  # fashioncat_export
LOAD = "bench/results/load_test.json"  # make load-test (one worker, UI mounted; 2-core Xeon)
LOAD_EPYC = "bench/results/load_test_amd-epyc.json"  # the same on an AMD EPYC
LOAD_2W = "bench/results/load_test_2workers.json"  # two workers, API only
BIG = "bench/results/big_photos_amd-epyc.json"  # bench/big_photos.py
BUDGET = "bench/results/big_photos.json"  # the same with the memory budget, in bursts
SWAP = "bench/results/swap_load.json"  # bench/swap_load.py: hot swaps under load
RESUME = "bench/results/catalogue_resume.json"  # bench/catalogue_resume.py: a catalogue killed, interrupted, resumed
SCALING = "bench/results/batch_scaling.json"  # bench/batch_scaling.py: fashioncat_predict with 1 and 2 workers
RETRAIN = "bench/results/retrain_amd-epyc.json"  # bench/bench_retrain.py (a retrain from corrections, AMD EPYC)


def pct(x: float, nd: int = 2) -> str:
    return f"{100 * x:.{nd}f}%"


def num(x: float, nd: int = 4) -> str:
    return f"{x:.{nd}f}"


def ms(x: float) -> str:
    return f"{x:.1f} ms"


def mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.2f} MB"


def rate(x: float) -> str:
    return f"{x:,.0f}/s"


def fixed(d: dict, kind: str) -> dict:
    "The 100 req/s row of a load test for `kind` (png or jpeg) against the service."
    return next(r for r in d["fixed"] if r["server"] == "fashioncat" and r["input"] == kind)


def weakest(per_class: dict, metric: str) -> str:
    name = min(per_class, key=lambda c: per_class[c][metric])
    return f"{num(per_class[name][metric])} ({name})"


def _load(kind: str):
    "Figures of one load-test JSON: mean, p95, CPU and RSS at 100/s per input, the highest rates, cold start."
    figs = {}
    for i in ("png", "jpeg"):
        figs |= {
            f"{i}_mean": lambda d, i=i: ms(fixed(d, i)["mean_ms"]),
            f"{i}_p95": lambda d, i=i: ms(fixed(d, i)["p95_ms"]),
            f"{i}_p99": lambda d, i=i: ms(fixed(d, i)["p99_ms"]),
            f"{i}_errors": lambda d, i=i: f"{fixed(d, i)['errors']} / {fixed(d, i)['sent']:,}",
            f"{i}_cpu": lambda d, i=i: pct(fixed(d, i)["cpu_share"], 1),
            f"{i}_rss": lambda d, i=i: f"{fixed(d, i)['rss_peak_mb']:.0f} MB",
            f"{i}_max": lambda d, i=i: rate(d["max_rps"]["fashioncat"][i]),
        }
    figs["cold_start"] = lambda d: f"{d['servers'][0]['cold_start_s']:.2f} s"
    figs["ui_ready"] = lambda d: f"{d['servers'][0]['ui_ready_s']:.1f} s"
    figs["date"] = lambda d: d["date"]
    if kind == "load":
        figs["noop_mean"] = lambda d: ms(next(r for r in d["fixed"] if r["server"] == "noop")["mean_ms"])
        figs["noop_max"] = lambda d: rate(d["max_rps"]["noop"]["png"])
    return {f"{kind}_{k}": v for k, v in figs.items()}


# name -> (JSON file, value -> text). Names say what the figure is; the file says where it was measured.
REVIEW = "bench/results/review_workflow.json"
FIGURES = {
    # the served model on the test set (fashioncat_evaluate)
    "accuracy_int8": (METRICS, lambda d: pct(d["accuracy"])),
    "test_n": (METRICS, lambda d: f"{d['n']:,}"),
    "macro_f1": (METRICS, lambda d: num(d["macro_f1"])),
    "weighted_f1": (METRICS, lambda d: num(d["weighted_f1"])),
    "top2_accuracy": (METRICS, lambda d: num(d["top2_accuracy"])),
    "log_loss": (METRICS, lambda d: num(d["log_loss"])),
    "lowest_precision": (METRICS, lambda d: weakest(d["per_class"], "precision")),
    "lowest_recall": (METRICS, lambda d: weakest(d["per_class"], "recall")),
    "ece": (METRICS, lambda d: num(d["calibration"]["ece"])),
    "ece_uncalibrated": (METRICS, lambda d: num(d["calibration"]["ece_uncalibrated"])),
    "temperature": (METRICS, lambda d: num(d["calibration"]["temperature"])),
    "review_threshold": (METRICS, lambda d: num(d["review"]["threshold"])),
    "review_share": (METRICS, lambda d: pct(d["review"]["test_share_flagged"], 1)),
    "review_precision": (METRICS, lambda d: num(d["review"]["test_precision"])),
    "robustness_clean": (METRICS, lambda d: pct(d["robustness"]["clean"], 1)),
    # the export (fashioncat_export)
    "accuracy_fp32": (EXPORT, lambda d: pct(d["test"]["fp32_accuracy"])),
    "valid_accuracy": (EXPORT, lambda d: pct(d["tta"]["valid_accuracy"])),
    "valid_accuracy_tta": (EXPORT, lambda d: pct(d["tta"]["valid_accuracy_tta"])),
    "params": (EXPORT, lambda d: f"{d['model']['params'] / 1e6:.2f} M"),
    "version": (EXPORT, lambda d: d["model"]["version"]),
    "int8_size": (EXPORT, lambda d: mb(d["files"]["int8"]["bytes"])),
    "fp32_size": (EXPORT, lambda d: mb(d["files"]["fp32"]["bytes"])),
    "same_class": (EXPORT, lambda d: pct(d["test"]["same_class"])),
    "parity": (EXPORT, lambda d: f"{d['parity']['max_abs_logits']:.1e}"),
    "parity_n": (EXPORT, lambda d: f"{d['parity']['n']:,}"),
    "calibration_images": (EXPORT, lambda d: f"{d['quantization']['calibration_images']:,}"),
    "fp32_weakest": (EXPORT, lambda d: weakest(d["test"]["fp32_per_class"], "recall")),
    # the service under load (bench/load_test.py)
    **{k: (LOAD, f) for k, f in _load("load").items()},
    **{k: (LOAD_EPYC, f) for k, f in _load("epyc").items()},
    **{k: (LOAD_2W, f) for k, f in _load("workers2").items()},
    # the review workflow in a browser (bench/review_workflow.py)
    "review_process_n": (REVIEW, lambda d: str(d["processing"]["photos"])),
    "review_process_s": (REVIEW, lambda d: f"{d['processing']['server_processing_s']:.1f} s"),
    "review_all_rows_s": (REVIEW, lambda d: f"{d['processing']['upload_to_all_rows_s']:.1f} s"),
    "review_n": (REVIEW, lambda d: str(d["review"]["photos"])),
    "review_to_export_s": (REVIEW, lambda d: f"{d['review']['upload_to_export_s']:.1f} s"),
    "review_keys": (REVIEW, lambda d: str(d["review"]["keys"])),
    "review_key_p95": (REVIEW, lambda d: ms(d["review"]["key_latency"]["p95_ms"])),
    "review_key_max": (REVIEW, lambda d: ms(d["review"]["key_latency"]["max_ms"])),
    "review_save_p95": (REVIEW, lambda d: ms(d["review"]["save_latency"]["p95_ms"])),
    "review_accuracy": (
        REVIEW,
        lambda d: f"{pct(d['review']['accuracy_model'], 1)} → {pct(d['review']['accuracy_final'], 1)}",
    ),
    "review_load": (REVIEW, lambda d: f"{d['machine']['load_avg_1m_at_start']:.1f}"),
    # big photos at once (bench/big_photos.py)
    "big_photo": (BIG, lambda d: d["photo"].split(",")[0]),
    "big_n": (BIG, lambda d: str(d["n"])),
    "big_idle_rss": (BIG, lambda d: f"{d['idle_rss_mb']:,} MB"),
    "big_peak_rss": (BIG, lambda d: f"{d['peak_rss_mb']:,} MB"),
    "big_rss_after": (BIG, lambda d: f"{d['rss_after_mb']:,} MB"),
    "big_wall": (BIG, lambda d: f"{d['wall_s']:.1f} s"),
    # the memory budget under bursts (bench/big_photos.py with FASHIONCAT_MEMORY_BUDGET_MB on this machine)
    "budget_idle_rss": (BUDGET, lambda d: f"{d['idle_rss_mb']:,} MB"),
    "budget_peak_rss": (BUDGET, lambda d: f"{d['peak_rss_mb']:,} MB"),
    "budget_photos": (BUDGET, lambda d: "{} / {}".format(*(d["photos"]["statuses"].get(s, 0) for s in ("200", "503")))),
    "budget_batches": (
        BUDGET,
        lambda d: "{} / {}".format(*(d["json_batches"]["statuses"].get(s, 0) for s in ("200", "503"))),
    ),
    "budget_small_p95": (BUDGET, lambda d: f"{d['small_idle']['p95_ms']} / {d['small_during']['p95_ms']} ms"),
    # hot swaps under load (bench/swap_load.py)
    "swap_date": (SWAP, lambda d: d["date"]),
    "swap_n": (SWAP, lambda d: str(len(d["swaps"]))),
    "swap_load_s": (SWAP, lambda d: f"{sorted(s['load_s'] for s in d['swaps'])[len(d['swaps']) // 2]:.2f} s"),
    "swap_failed": (SWAP, lambda d: f"{d['swapping']['failed']} / {d['swapping']['requests']:,}"),
    "swap_p95": (SWAP, lambda d: ms(d["swapping"]["p95_ms"])),
    "swap_steady_p95": (SWAP, lambda d: ms(d["steady"]["p95_ms"])),
    # whole-catalogue categorisation (bench/catalogue_resume.py, bench/batch_scaling.py)
    "resume_photos": (RESUME, lambda d: f"{d['photos']:,}"),
    "resume_kill": (RESUME, lambda d: f"{d['runs'][0]['rows_after']:,}"),
    "resume_int": (RESUME, lambda d: f"{d['runs'][1]['rows_after']:,}"),
    "resume_last": (RESUME, lambda d: f"{d['runs'][2]['new_rows']:,}"),
    "resume_rows": (RESUME, lambda d: f"{d['rows']:,} rows for {d['unique_paths']:,} distinct photos"),
    "resume_sample": (RESUME, lambda d: f"{d['sample_identical']} sampled rows"),
    "resume_rates": (
        RESUME,
        lambda d: "-".join(f"{f(r['rows_per_s'] for r in d['runs'] if r['new_rows']):.0f}" for f in (min, max)),
    ),
    "resume_load": (
        RESUME,
        lambda d: "-".join(f"{f(r['loadavg_before'][0] for r in d['runs']):.0f}" for f in (min, max)),
    ),
    "scaling_cpu": (SCALING, lambda d: _span(d, "cpu_ms_per_photo", "{:.1f}") + " ms"),
    "scaling_load": (SCALING, lambda d: _span(d, "loadavg_before", "{:.1f}")),
    "scaling_cores": (SCALING, lambda d: _span(d, "cores_used", "{:.2f}")),
    "scaling_1w": (SCALING, lambda d: "-".join(f"{x:.0f}" for x in d["spread_photos_per_s"]["1"])),
    "scaling_2w": (SCALING, lambda d: "-".join(f"{x:.0f}" for x in d["spread_photos_per_s"]["2"])),
    # a retrain from corrections (bench/bench_retrain.py): measured epochs, and the machine-alone estimate
    "retrain_epochs_measured": (RETRAIN, lambda d: str(d["epochs"])),
    "retrain_epoch_cpu": (RETRAIN, lambda d: f"{d['cpu_seconds']['finetune'] / d['epochs']:.0f} s"),
    "retrain_epoch_alone": (RETRAIN, lambda d: f"{d['idle_estimate']['epoch_s']:.0f} s"),
    "retrain_after": (RETRAIN, lambda d: f"{d['idle_estimate']['after_training_s']:.0f} s"),
    "retrain_epochs": (RETRAIN, lambda d: str(d["idle_estimate"]["retrain_epochs"])),
    "retrain_minutes": (RETRAIN, lambda d: f"{d['idle_estimate']['total_s'] / 60:.1f} minutes"),
    "retrain_wall": (RETRAIN, lambda d: f"{d['seconds']['total'] / 60:.1f} minutes"),
    "retrain_load": (RETRAIN, lambda d: f"{d['load_average_at_end']:.1f}"),
    "retrain_accuracy": (RETRAIN, lambda d: pct(d["test_accuracy"])),
    "retrain_corrections": (RETRAIN, lambda d: f"{d['corrections']['train']:,}"),
    "retrain_verdict": (
        RETRAIN,
        lambda d: (
            "passed the gate"
            if d["gate_passed"]
            else "was refused by the gate (" + "; ".join(d["gate_failures"]) + "), so it stayed a challenger"
        ),
    ),
}


# The shop-photo benchmark and the not-a-product judgement, cell by cell (bench/catalogue_benchmark.py,
# scripts/calibrate_ood.py, bench/prepare_latency.py): the tables in docs/serving.md are made of these.
BEFORE, NOW = "bench/results/catalogue_benchmark_before.json", "bench/results/catalogue_benchmark_extraction.json"
OOD, PREP = "bench/results/ood.json", "bench/results/prepare_latency.json"
SHOP_KINDS = ("raw", "white", "off_white", "sweep", "vignette", "drop_shadow", "reflection", "corner_text", "watermark",
              "price_sticker", "cut_edge", "small_hires", "noisy_jpeg", "low_light", "dark_bg", "transparent", "exif",
              "pale", "texture")  # fmt: skip
OUTLIERS = ("banner", "size_chart", "shapes", "flat", "photo_crop", "digits", "noise", "texture", "pattern", "scribble",
            "label", "barcode", "icon")  # fmt: skip


def _ood(d: dict) -> dict:
    return d["models"]["fashioncat-int8.onnx"]


def _gap(d: dict, k: str) -> str:
    return "—" if k == "raw" else f"{100 * d['worst_gap'][k]:.1f}"


for _k in SHOP_KINDS:
    FIGURES[f"cat_before_{_k}"] = (BEFORE, lambda d, k=_k: f"{100 * d['accuracy'][k]['int8']:.1f}")
    FIGURES[f"cat_now_{_k}"] = (NOW, lambda d, k=_k: f"{100 * d['accuracy'][k]['int8']:.1f}")
    FIGURES[f"cat_gap_{_k}"] = (NOW, lambda d, k=_k: _gap(d, k))
for _k in OUTLIERS:
    FIGURES[f"ood_held_{_k}"] = (OOD, lambda d, k=_k: "yes" if _ood(d)["outliers"][k]["held_out"] else "no")
    FIGURES[f"ood_flagged_{_k}"] = (OOD, lambda d, k=_k: f"{100 * _ood(d)['outliers'][k]['flagged']:.1f}")
    FIGURES[f"ood_auroc_{_k}"] = (OOD, lambda d, k=_k: f"{_ood(d)['outliers'][k]['auroc']:.3f}")
FIGURES |= {
    "cat_before_n": (BEFORE, lambda d: f"{d['n']:,}"),
    "cat_now_n": (NOW, lambda d: f"{d['n']:,}"),
    "cat_within": (NOW, lambda d: f"{sum(g <= 0.03 + 1e-9 for g in d['worst_gap'].values())} of {len(d['worst_gap'])}"),
    "prep_p95": (PREP, lambda d: f"{d['cpu_ms']['this tree']['p95']:.2f} ms"),
    "prep_p95_before": (PREP, lambda d: f"{next(v for k, v in d['cpu_ms'].items() if k != 'this tree')['p95']:.2f} ms"),
    "ood_products": (OOD, lambda d: pct(_ood(d)["products_flagged_all_kinds"], 1)),
    "ood_products_raw": (OOD, lambda d: pct(_ood(d)["products_flagged"]["raw"], 1)),
    "ood_outliers": (OOD, lambda d: pct(_ood(d)["outliers_flagged"], 1)),
    "ood_held": (OOD, lambda d: pct(_ood(d)["held_out_flagged"], 1)),
    "ood_n": (OOD, lambda d: str(d["n_outliers"])),
}


# The load test before and after shop-photo extraction and the not-a-product judgement (bench/load_compare.py).
COMPARE = "bench/results/load_compare.json"


def _lc(d: dict, inp: str, fig: str) -> str:
    "before → after (the ratio) of one figure of the comparison."
    m, r = d["medians"][inp][fig], d["ratios"][inp][fig]
    f = {"cpu_share": "{:.1%}", "rss_peak_mb": "{:.0f} MB", "max_rps": "{:.0f}/s"}.get(fig, "{:.1f} ms")
    return f"{f.format(m['before'])} → {f.format(m['after'])} (x{r:.2f})"


for _i in ("png", "jpeg"):
    for _f in ("mean_ms", "p95_ms", "cpu_share", "rss_peak_mb", "max_rps"):
        FIGURES[f"lc_{_i}_{_f}"] = (COMPARE, lambda d, i=_i, f=_f: _lc(d, i, f))
FIGURES |= {
    "lc_rounds": (COMPARE, lambda d: str(d["rounds"])),
    "lc_before": (COMPARE, lambda d: d["before"]["rev"]),
    "lc_after": (COMPARE, lambda d: d["after"]["commit"]),
    "lc_regressed": (COMPARE, lambda d: ", ".join(d["regressed"]) or "none"),
}


def _span(d: dict, key: str, fmt: str) -> str:
    "min-max of `key` over every run of a batch_scaling JSON (the 1-minute load average for `loadavg_before`)."
    xs = [r[key][0] if key == "loadavg_before" else r[key] for runs in d["runs"].values() for r in runs]
    return f"{fmt.format(min(xs))}-{fmt.format(max(xs))}"


def doc_files(root: Path = ROOT) -> list[Path]:
    "The files that carry figures: README.md, its notebook, CHANGELOG.md and docs/*.md (those that exist)."
    files = [root / "README.md", root / "nbs" / "index.ipynb", root / "CHANGELOG.md", *sorted(root.glob("docs/*.md"))]
    return [f for f in files if f.exists()]


def figures(root: Path = ROOT) -> dict[str, str]:
    "Every figure's text, from the JSON files under `root`."

    @cache
    def load(rel: str):
        return json.loads((root / rel).read_text())

    out = {name: fmt(load(src)) for name, (src, fmt) in FIGURES.items()}
    bad = [n for n, v in out.items() if re.search(r'["\\\n<>]', v)]  # the text goes inside a notebook's JSON strings
    assert not bad, f"figures that cannot go between markers: {bad}"
    return out


def fill(text: str, figs: dict[str, str], where: str = "") -> str:
    "`text` with every marked figure replaced by its value; an unknown name is an error naming it."
    unknown = sorted({m[1] for m in MARK.finditer(text)} - figs.keys())
    if unknown:
        raise KeyError(f"{where}: unknown figure(s) {unknown}: add them to FIGURES in scripts/docs_figures.py")
    return MARK.sub(lambda m: f"<!-- fig:{m[1]} -->{figs[m[1]]}<!-- /fig -->", text)


def stale(root: Path = ROOT) -> list[str]:
    "One line per marked figure that differs from its JSON: doc, figure, what the doc says, what the JSON gives."
    figs, out = figures(root), []
    for f in doc_files(root):
        rel = f.relative_to(root)
        fill(f.read_text(), figs, str(rel))  # unknown names first
        for m in MARK.finditer(f.read_text()):
            if m[2] != figs[m[1]]:
                out.append(f"{rel}: {m[1]} says {m[2]!r}, {FIGURES[m[1]][0]} gives {figs[m[1]]!r}")
    return out


def write(root: Path = ROOT) -> list[Path]:
    "Rewrite the marked figures of every doc from the JSON; the files that changed."
    figs, changed = figures(root), []
    for f in doc_files(root):
        text = f.read_text()
        new = fill(text, figs, str(f.relative_to(root)))
        if new != text:
            f.write_text(new)
            changed.append(f)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a doc's figure differs")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    a = p.parse_args(argv)
    if a.check:
        diffs = stale(a.root)
        for line in diffs:
            print(line, file=sys.stderr)
        if diffs:
            print("figures in the docs differ from their JSON: run `make docs` and commit", file=sys.stderr)
        return 1 if diffs else 0
    for f in write(a.root):
        print("wrote", f.relative_to(a.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
