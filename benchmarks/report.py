# ruff: noqa: E501  (markdown table templates read better on one line)
"""Write docs/benchmarks.md from benchmarks/results.json: every figure with the
command that made it, the machine, the goal, and whether the goal was met.

    python benchmarks/report.py
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")

INTRO = """# Benchmarks

What regularization costs with keras_regs, against Keras' built-ins and the usual
workarounds. Every figure comes from a script in `benchmarks/` that runs its variants
side by side in one process: a warm-up first (compilation excluded), then rounds that
run every variant once in turn, and the median of the rounds. Ratios, not bare
seconds, are what carry over between machines. `make bench` runs them all and
rewrites this page from `benchmarks/results.json`.
"""


def verdict(ok):
    return "met" if ok else "**missed**"


def section(key, r):
    lines = [
        f"## {key}",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {machine(r)}",
        "",
    ]
    name = key.split("[")[0]
    if name.startswith("train_step/"):
        lines += [
            "| variant | median ms | / built-ins | extra over no penalty |",
            "|---|---|---|---|",
        ]
        for variant, ms in r["median_ms"].items():
            lines.append(
                f"| {variant} | {ms:.3f} | {r['ratio_to_builtins'][variant]:.3f} | "
                f"{r['extra_over_no_penalty'][variant]:+.1%} |"
            )
        ours = max(
            r["ratio_to_builtins"][v]
            for v in r["ratio_to_builtins"]
            if "keras_regs" in v
        )
        extra = max(
            r["extra_over_no_penalty"][v]
            for v in r["extra_over_no_penalty"]
            if "keras_regs" in v
        )
        builtins = r["extra_over_no_penalty"]["keras built-ins"]
        lines += [
            "",
            f"Goal keras_regs / built-ins <= 1.02: {ours:.3f}, {verdict(ours <= 1.02)}. "
            f"Goal extra cost <= the built-ins' ({builtins:+.1%}): {extra:+.1%}, "
            f"{verdict(extra <= builtins + 0.02)} (within the 2% of the first goal).",
        ]
    elif name.startswith("attach/"):
        ours = r["peak_extra_bytes"]["keras_regs.regularize_model"] / r["weight_bytes"]
        theirs = (
            r["peak_extra_bytes"]["workaround (attrs + JSON + set_weights)"]
            / r["weight_bytes"]
        )
        lines += [
            "| variant | median s | peak extra memory (% of weight bytes) |",
            "|---|---|---|",
            f"| keras_regs.regularize_model | {r['median_s']['keras_regs.regularize_model']:.3f} | {ours:.1%} |",
            f"| workaround (attrs + JSON + set_weights) | {r['median_s']['workaround (attrs + JSON + set_weights)']:.3f} | {theirs:.1%} |",
            "",
            f"Goal at least 20x faster: {r['speedup_over_workaround']:.1f}x, "
            f"{verdict(r['speedup_over_workaround'] >= 20)}. Goal peak extra memory under 5% "
            f"of the weights' bytes: {ours:.1%}, {verdict(ours < 0.05)}. Rounds: {r['rounds']}.",
        ]
    elif name.startswith("insert/"):
        # The measured variant is the one regularize_model call of the row.
        ours = next(v for v in r["ratio_to_clone_model"] if "regularize_model" in v)
        ratio = r["ratio_to_clone_model"][ours]
        if "median_ms" in r:  # operations of milliseconds (the tiny BERT)
            lines += ratio_table(r, "ratio_to_clone_model", "/ clone_model")
        else:
            lines += ["| variant | median s | / clone_model |", "|---|---|---|"]
            for variant, s in r["median_s"].items():
                lines.append(
                    f"| {variant} | {s:.3f} | {r['ratio_to_clone_model'][variant]:.3f} |"
                )
        lines += [
            "",
            f"Goal at most 1.5x clone_model: {ratio:.2f}x, {verdict(ratio <= 1.5)}. Rounds: {r['rounds']}.",
        ]
        if "note" in r:
            lines += ["", r["note"]]
    elif name.startswith("contractive/"):
        closed = r["ratio_to_no_penalty"]["closed form"]
        goal = r.get("goal_ratio", 1.3)
        lines += ["| variant | median ms | / no penalty |", "|---|---|---|"]
        for variant, ms in r["median_ms"].items():
            lines.append(
                f"| {variant} | {ms:.3f} | {r['ratio_to_no_penalty'][variant]:.3f} |"
            )
        lines += [
            "",
            f"Goal closed form at least 10x faster than the fallback: "
            f"{r['fallback_over_closed_form']:.1f}x, {verdict(r['fallback_over_closed_form'] >= 10)}. "
            f"Goal within {goal}x of the plain step: {closed:.2f}x, {verdict(closed <= goal)}.",
        ]
    elif name.startswith(("logs/", "schedules/")):
        what, baseline, measured = (
            ("per-term logs", "logs off", "logs on")
            if name.startswith("logs/")
            else ("schedules", "numbers", "schedules")
        )
        key = "ratio_to_" + baseline.replace(" ", "_")
        ratio = r[key][measured]
        lines += ratio_table(r, key, f"/ {baseline}")
        paired = r.get("paired_" + key, {}).get(measured)
        if paired is not None:  # the goal reads the paired ratio when recorded
            lines += [
                "",
                f"Paired (median of per-round ratios): {paired:.3f}.",
            ]
            ratio = paired
        lines += [
            "",
            f"Goal {what} at most 2% per step: {ratio - 1:+.1%}, "
            f"{verdict(ratio <= 1.02)}. Rounds: {r['rounds']}.",
        ]
    elif name.startswith("noise_dropout/"):
        ratio = r["ratio_to_keras"]["keras_regs GaussianNoise+BernoulliDropout"]
        lines += ratio_table(r, "ratio_to_keras", "/ Keras' layers")
        lines += [
            "",
            f"Goal within 1.05x of Keras' layers: {ratio:.3f}x, {verdict(ratio <= 1.05)}.",
        ]
    return "\n".join(lines)


def ratio_table(r, key, column):
    """A variant / median ms / ratio table from `r["median_ms"]` and `r[key]`."""
    lines = [f"| variant | median ms | {column} |", "|---|---|---|"]
    for variant, ms in r["median_ms"].items():
        lines.append(f"| {variant} | {ms:.3f} | {r[key][variant]:.3f} |")
    return lines


def machine(r):
    m = r["machine"]
    return (
        f"{m['cpus']} CPU cores ({m['processor']}), Keras {m['keras']} on "
        f"{m['backend']}, Python {m['python']}"
    )


def main():
    with open(os.path.join(HERE, "results.json")) as f:
        results = json.load(f)
    body = [INTRO] + [section(k, results[k]) for k in sorted(results)]
    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        with open(notes) as f:
            body.append(f.read())
    with open(DOC, "w") as f:
        f.write("\n\n".join(body).rstrip() + "\n")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
