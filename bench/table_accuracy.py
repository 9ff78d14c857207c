"""The accuracy tables of the benchmark pages (``table.py`` writes them): SpiralNet against the
U-Net and watershed on HeLa and on BBBC039 validation, and the equal-budget comparisons."""


def compare_table(c, full: bool = True) -> list[str]:
    """Accuracy and time per model; with ``full``, also the generalisation and thesis tables."""
    # Results committed before 2026-12-04 are v6's (the default model until then) and say only
    # "shipped default"; the model's card holds the shipped model's own test figures.
    which = c.get("model_version", "v6, the default model until 2026-12-04")
    lines = [
        f"Accuracy and time per image, {c['data']} ({c['threads']} threads, {c['device']}; SpiralNet {which}):",
        "",
        "| model | object F1@0.5 | mean F1@0.5:0.9 | pixel F1 | merges | splits | s / image | weights |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in c["models"].items():
        lines.append(
            f"| {name} | {r['object_f1_50']:.3f} | {r['object_f1_mean_50_90']:.3f} | {r['pixel_f1']:.3f} | "
            f"{r['merges']} | {r['splits']} | {r['seconds_per_image']:.2f} | {r['weights']} |"
        )
    sn = c["models"].get("spiralnet", {})
    if full and "regions_per_object" in sn:
        per = sn["regions_per_object"]
        lines += [
            "",
            f"SpiralNet ran as `spiralray segment` does (diameter estimated per image) and segmented "
            f"{sn['regions']} regions for {sn['n_pred']} objects"
            + ("." if per is None else f": {per:.2f} per found object, border continuations included."),
        ]
    if full and c.get("note"):
        lines += ["", c["note"]]
    if full and all("border_excluded" in r for r in c["models"].values()):
        lines += [
            "",
            "The same predictions with objects touching the image border removed from prediction and "
            "truth (`evaluate_many(..., exclude_border=True)`): HeLa's labels leave most nuclei cut "
            "by the border unannotated, so a found cut nucleus counts as a false positive above.",
            "",
            "| model | object F1@0.5 | mean F1@0.5:0.9 | pixel precision | pixel recall | pixel F1 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in c["models"].items():
            b = r["border_excluded"]
            lines.append(
                f"| {name} | {b['object_f1_50']:.3f} | {b['object_f1_mean_50_90']:.3f} | "
                f"{b['pixel_precision']:.3f} | {b['pixel_recall']:.3f} | {b['pixel_f1']:.3f} |"
            )
    g = c.get("generalisation")
    if g and full:
        names = list(next(iter(g.values())))
        runs = all("regions_per_object" in models.get("spiralnet", {}) for models in g.values())
        lines += [
            "",
            "Generalisation: data nothing was trained or tuned on, unchanged settings "
            "(object F1@0.5 / pixel F1"
            + ("; SpiralNet's regions segmented per found object, its recursion's work" if runs else "")
            + "):",
            "",
            "| data | " + " | ".join(names) + (" | regions / object |" if runs else " |"),
            "|---|" + "---:|" * (len(names) + runs),
        ]
        for data, models in g.items():
            cells = [f"{models[m]['object_f1_50']:.3f} / {models[m]['pixel_f1']:.3f}" for m in names]
            if runs:
                per = models["spiralnet"]["regions_per_object"]
                cells.append("-" if per is None else f"{per:.2f}")
            lines.append(f"| {data} | " + " | ".join(cells) + " |")
    t = c.get("thesis")
    if t and full:
        s = t["scorer_at_threshold"]
        lines += [
            "",
            f"Thesis counterparts: scorer at t = {s['threshold']}: error rate {s['error_rate']:.3f}, "
            f"miss rate {s['miss_rate']:.3f}, stability error rate {s['stability_error_rate']:.3f} "
            "(curves: `bench/results/scorer_threshold.png`, cf. thesis Fig. 22). Segmenter per channel "
            "(cf. thesis Table 1):",
            "",
            "| channel | precision | recall | F1 |",
            "|---|---:|---:|---:|",
        ]
        for ch, v in t["segmenter_per_channel"].items():
            lines.append(f"| {ch} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |")
    return lines


def equal_budget_table(c) -> list[str]:
    """SpiralNet and U-Net-32 each trained from scratch for the same minutes on the same GPU."""
    lines = [
        f"Equal budget, from scratch (`bench/gpu/run.sh`), {c['data']}, evaluated on {c['device']}:",
        "",
        "| model | object F1@0.5 | mean F1@0.5:0.9 | pixel F1 | merges | DSB 2018 object F1 | trained |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    dsb = next((v for k, v in c.get("generalisation", {}).items() if k.startswith("DSB")), {})
    for name, r in c["models"].items():
        if name == "watershed":
            continue
        d = dsb.get(name, {}).get("object_f1_50")
        lines.append(
            f"| {name} | {r['object_f1_50']:.3f} | {r['object_f1_mean_50_90']:.3f} | {r['pixel_f1']:.3f} | "
            f"{r['merges']} | {'-' if d is None else f'{d:.3f}'} | {r['weights']} |"
        )
    return lines


def bbbc039_table(b) -> list[str]:
    """The thesis's table on BBBC039 validation (bench/bbbc039.py): per-image means, pooled beside."""
    lines = [
        f"BBBC039 validation ({b['data']}; {b['figures']}; {b['threads']} threads, {b['device']};"
        " thesis: pixel F1 0.965, U-Net 0.960):",
        "",
        "| method | pixel F1 | precision | recall | object F1@0.5 | mean F1@0.5:0.9 | merges | splits "
        "| s / image (CPU s) | scorer error / stability |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("pixel_f1", "pixel_precision", "pixel_recall", "object_f1_50", "object_f1_mean_50_90")
    for name, r in b["methods"].items():
        m, p = r["per_image_mean"], r["pooled"]
        cells = " | ".join(f"{m[k]:.3f} ({p[k]:.3f})" for k in keys)
        sc = r.get("scorer")
        rates = f"{sc['error_rate']:.3f} / {sc['stability_error_rate']:.3f}" if sc else "-"
        lines.append(
            f"| {b.get('names', {}).get(name, name)} | {cells} | {m['merges']:.2f} ({p['merges']}) | "
            f"{m['splits']:.2f} ({p['splits']}) | {r['seconds_per_image']:.2f} ({r['cpu_seconds_per_image']:.2f}) "
            f"| {rates} |"
        )
    from spiralray.bench.compare import postprocessing_note  # the same words as compare's table

    notes = [r["postprocessing"] for r in b["methods"].values() if "postprocessing" in r]
    return (
        lines
        + [""] * bool(notes)
        + [f"U-Net: {n.get('trained', '')}; {postprocessing_note(n)}." for n in notes]
    )


def equal_budget_bbbc039_table(b) -> list[str]:
    """SpiralNet and a U-Net, each trained from scratch for the same CPU minutes on the same
    data, each post-processing chosen on the same validation sets (the U-Net's by
    bench/bbbc039.py --unet, for one that stores no choice)."""
    lines = bbbc039_table(b)
    lines[0] = "Equal budget: " + lines[0]
    if b.get("budget"):
        lines += ["", b["budget"]]
    return lines
