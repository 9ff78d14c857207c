"""Tables of the input-robustness benchmarks (dark nuclei, padding, empty fields, polarity),
from bench/results/{invert,padding,noise_only,polarity}.json; ``table.py`` writes them into
docs/benchmarks.md's INPUTS block."""


def invert_table(v) -> list[str]:
    lines = [
        "Dark nuclei on a bright background, approximated by inverting fluorescence images"
        " (`python bench/invert.py`); object F1@0.5 / pixel F1, regions segmented:",
        "",
        "| image | native | inverted, read as is | inverted, `--invert` |",
        "|---|---:|---:|---:|",
    ]
    for name, rows in v.items():
        cells = [rows[k] for k in ("native", "inverted", "inverted, invert=True")]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{c['object_f1_50']:.3f} / {c['pixel_f1']:.3f}, {c['regions']}" for c in cells)
            + " |"
        )
    return lines


def padding_table(p) -> list[str]:
    lines = [
        f"HeLa test crops ({p['crop'][0]} x {p['crop'][1]}) with their top {p['padded_rows']} rows set to 0,"
        f" scored on rows {p['scored_rows']} (`python bench/padding.py`); object F1@0.5:",
        "",
        "| frame | unpadded | padded, read as is | padded, `--pad-value 0` |",
        "|---|---:|---:|---:|",
    ]
    for frame, r in p["frames"].items():
        lines.append(
            f"| {frame} | {r['object_f1_whole']:.3f} | {r['object_f1_padded']:.3f}"
            f" | {r['object_f1_padded_pad_value_0']:.3f} |"
        )
    return lines


def _span(lo, hi, fmt=".1f") -> str:
    if lo is None:
        return "-"
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}} to {hi:{fmt}}"


def noise_table(n) -> list[str]:
    lines = [
        f"Empty fields (`python bench/noise_only.py`): in noise sigmas, above a fitted illumination"
        f" surface, the brightest 5 x 5 mean of the 2 x 2 minima over the median (peak) and the"
        f" 1st-99.8th percentile range; noise only (no objects) under both"
        f" {n['peak_threshold']:g} and {n['range_threshold']:g}. Before the surface (twenty-first session),"
        f" a 10-30% vignette over an empty field stood 1.5-1.6 / 6.0-6.3 and got 47-64 objects:",
        "",
        "| images | n | peak | range | noise only |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in n["sets"].items():
        peak, rng = _span(r["peak_min"], r["peak_max"]), _span(r["range_min"], r["range_max"])
        unmeasured = (
            "" if r["measurable"] == r["images"] else f" ({r['images'] - r['measurable']} unmeasurable)"
        )
        lines.append(f"| {name} | {r['images']} | {peak} | {rng} | {r['noise_only']}{unmeasured} |")
    return lines


def polarity_table(p) -> list[str]:
    lines = [
        f"Polarity (`python bench/polarity.py`): +1 bright nuclei on dark, -1 dark on bright; a"
        f" hint names `--invert` under {p['threshold']:g} (twice that for a field judged noise only):",
        "",
        "| images | n | as is | hinted | inverted | hinted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in p["sets"].items():
        a, b = r["as is"], r["inverted"]
        lines.append(
            f"| {name} | {r['images']} | {_span(a['min'], a['max'], '+.2f')} | {a['hinted']}"
            f" | {_span(b['min'], b['max'], '+.2f')} | {b['hinted']} |"
        )
    return lines


INPUTS = (
    ("invert.json", invert_table),
    ("padding.json", padding_table),
    ("noise_only.json", noise_table),
    ("polarity.json", polarity_table),
)
