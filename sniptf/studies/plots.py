"""Figures for the recorded results (matplotlib, written as PNG)."""

import itertools
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from sniptf.during_training import registry  # noqa: E402


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def jsv_vs_sparsity(rows, path, title=""):
    """Mean layerwise JSV (± std) against sparsity, one panel per activation."""
    activations = sorted({r["activation"] for r in rows})
    fig, axes = plt.subplots(1, len(activations), figsize=(5.2 * len(activations), 3.8), squeeze=False)
    for ax, activation in zip(axes[0], activations):
        for init in sorted({r["init"] for r in rows}):
            for ai, style in ((False, "--"), (True, "-")):
                pts = sorted((r["sparsity"], r["jsv_mean"], r["jsv_std"]) for r in rows
                             if r["activation"] == activation and r["init"] == init and
                             (r["isometry"] == ai or r["sparsity"] == 0.0))
                if not pts:
                    continue
                s, m, sd = zip(*pts)
                label = f"{init}{' + AI' if ai else ''}"
                ax.errorbar([100 * v for v in s], m, yerr=sd, linestyle=style, marker="o",
                            capsize=3, label=label, alpha=0.85)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_title(f"{activation} MLP")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("layerwise JSV (mean ± std)")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def training_curves(rows, path, key="train_loss", ylabel="training loss", title=""):
    """One line per (sparsity, isometry) run: `key` per epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, sparsity in enumerate(sorted({r["sparsity"] for r in rows})):
        for r in rows:
            if r["sparsity"] != sparsity:
                continue
            ax.plot(range(1, len(r[key]) + 1), r[key], color=colors[i % len(colors)],
                    linestyle="-" if r["isometry"] else "--",
                    label=f"{100 * sparsity:g}% sparse{' + AI' if r['isometry'] else ''}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def mask_patterns(maps, path, title=""):
    """`maps[b]` = [classes, H, W] kept first-layer connections per pixel; one row per b."""
    sizes = sorted(maps)
    classes = maps[sizes[0]].shape[0]
    fig, axes = plt.subplots(len(sizes), classes, figsize=(1.3 * classes, 1.45 * len(sizes)), squeeze=False)
    for row, b in enumerate(sizes):
        for c in range(classes):
            ax = axes[row][c]
            ax.imshow(maps[b][c], cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(str(c), fontsize=9)
            if c == 0:
                ax.set_ylabel(f"b = {b}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def memorization(result, path, title=""):
    """Training accuracy on shuffled labels per epoch, dense vs pruned."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in result["train_accuracy"].items():
        ax.plot(range(1, len(curve) + 1), curve, label=label)
    ax.axhline(0.1, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training accuracy (random labels)")
    ax.set_ylim(0, 1)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def layer_sparsity(rows, path, title=""):
    """Kept fraction per layer, one bar group per layer, one bar per (model, sparsity)."""
    fig, axes = plt.subplots(1, len({r["model"] for r in rows}), figsize=(11, 3.8), squeeze=False)
    for ax, model in zip(axes[0], sorted({r["model"] for r in rows})):
        sel = [r for r in rows if r["model"] == model]
        layers = list(sel[0]["sparsity_per_layer"])
        width = 0.8 / len(sel)
        for i, r in enumerate(sel):
            kept = [100 * (1 - r["sparsity_per_layer"][l]) for l in layers]
            ax.bar([j + i * width for j in range(len(layers))], kept, width,
                   label=f"{r['criterion']} {100 * r['sparsity']:.0f}%")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers)
        ax.set_yscale("log")
        ax.set_ylabel("kept weights per layer (%)")
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def data_parallelism(results, out_dir):
    """The data-parallelism-and-sparsity figures; returns their paths.

    k_star.png (K* vs B, log-log, with the fit and the perfect-scaling line),
    k_star_normalized.png (K* / K* at the smallest B), best_lr.png (the best
    lr per point, hollow where it sits at the edge of the lrs tried),
    effective_lr.png (lr/(1 − m) per point, momentum workloads only),
    trial_status.png (every trial's lr vs B by outcome, cut-off trials apart)
    and lipschitz.png (L along training: each init seed faint, their mean bold).
    K* figures show the strictest goal.
    """
    import numpy as np

    sparsities = results["workload"]["sparsities"]
    goals = sorted(results["workload"].get("goal_errors") or [results["workload"]["workload"]["goal_error"]])
    points = [p for p in results["points"] if p.get("goal_error", goals[0]) == goals[0]]
    colors = {s: plt.cm.viridis(i / max(1, len(sparsities) - 1)) for i, s in enumerate(sparsities)}
    label = lambda s: f"{100 * s:g}% sparse"
    fits = {f["sparsity"]: f for f in results["fits"] if f.get("goal_error", goals[0]) == goals[0]}
    paths = []

    def curve(s):
        pts = sorted((p["batch_size"], p["k_star"]) for p in points if p["sparsity"] == s and p["k_star"])
        return np.array([b for b, _ in pts], float), np.array([k for _, k in pts], float)

    for normalized in (False, True):
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        for s in sparsities:
            b, k = curve(s)
            if not len(b):
                continue
            scale = k[0] if normalized else 1.0
            ax.plot(b, k / scale, "o-", color=colors[s], label=label(s))
            if s in fits and not normalized:
                grid = np.geomspace(b.min(), b.max(), 100)
                f = fits[s]
                ax.plot(grid, f["c1"] / grid + f["c2"], ":", color=colors[s], lw=1)
        b0, k0 = curve(sparsities[0])
        if len(b0):
            grid = np.geomspace(b0.min(), b0.max(), 10)
            ref = 1.0 if normalized else k0[0]
            ax.plot(grid, ref * b0.min() / grid, "--", color="gray", lw=1, label="perfect scaling")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel("K* / K*(smallest B)" if normalized else "steps to result K*")
        ax.set_title(("normalized steps to result" if normalized else
                      "steps to result (dotted: c1/B + c2 fit)") + f", goal {goals[0]:.1%}", fontsize=10)
        ax.legend(fontsize=8)
        paths.append(_save(fig, os.path.join(out_dir, "k_star_normalized.png" if normalized else "k_star.png")))

    def per_point(value, name, ylabel, title):
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        for s in sparsities:
            pts = sorted((p["batch_size"], value(p["best_params"]), bool(p.get("at_boundary")))
                         for p in points if p["sparsity"] == s and p["best_params"])
            if not pts:
                continue
            ax.plot([b for b, _, _ in pts], [v for _, v, _ in pts], "-", color=colors[s], label=label(s))
            for b, v, edge in pts:
                ax.plot([b], [v], "o", color=colors[s], markerfacecolor="none" if edge else colors[s])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        paths.append(_save(fig, os.path.join(out_dir, name)))

    per_point(lambda p: p["learning_rate"], "best_lr.png", "best learning rate",
              "best lr per point (hollow: at the edge of the lrs tried, K* an upper bound)")
    if any(p["best_params"] and "momentum" in p["best_params"] for p in points):
        per_point(lambda p: p["learning_rate"] / (1 - p.get("momentum", 0.0)), "effective_lr.png",
                  "lr / (1 − momentum)", "effective learning rate per point")

    fig, axes = plt.subplots(1, len(sparsities), figsize=(3.6 * len(sparsities), 3.4), squeeze=False,
                             sharey=True)
    marks = {"reached": ("o", "tab:green"), "not_reached": ("x", "tab:orange"),
             "cut_off": ("s", "tab:gray"), "diverged": ("^", "tab:red")}
    outcome = lambda t: "cut_off" if t["status"] == "not_reached" and t.get("cut_off") else t["status"]
    for ax, s in zip(axes[0], sparsities):
        for status, (marker, color) in marks.items():
            pts = [(t["batch_size"], t["params"]["learning_rate"]) for t in results["trials"]
                   if t["sparsity"] == s and outcome(t) == status]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=color, s=18, label=status.replace("_", " "))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(label(s), fontsize=9)
        ax.set_xlabel("B")
    axes[0][0].set_ylabel("learning rate")
    axes[0][-1].legend(fontsize=7)
    paths.append(_save(fig, os.path.join(out_dir, "trial_status.png")))

    if results["lipschitz"]:
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        for s in sorted({e["sparsity"] for e in results["lipschitz"]}):
            runs = [e for e in results["lipschitz"] if e["sparsity"] == s and e["values"]]
            for e in runs:
                ax.plot(e["steps"], e["values"], "-", color=colors[s], alpha=0.25, lw=0.8)
            if runs:
                length = min(len(e["values"]) for e in runs)
                mean = np.mean([e["values"][:length] for e in runs], axis=0)
                ax.plot(runs[0]["steps"][:length], mean, "o-", color=colors[s], lw=2,
                        label=f"{label(s)} (mean of {len(runs)} seeds: {float(np.mean(mean)):.2f})")
        entry = results["lipschitz"][0]
        ax.set_xlabel("training step")
        ax.set_ylabel("local Lipschitz constant L")
        ax.set_title(f"smoothness along training (B={entry['batch_size']}, "
                     f"lr {entry.get('learning_rate', float('nan')):g})", fontsize=10)
        ax.legend(fontsize=8)
        paths.append(_save(fig, os.path.join(out_dir, "lipschitz.png")))
    return paths


def error_vs_sparsity(rows, path, title=""):
    """Test error (mean ± std over seeds) against sparsity, one line per criterion and
    one panel per model; the dense error as a horizontal line."""
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.4 * len(models), 3.9), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for criterion in sorted({r["criterion"] for r in mine} - {"none"}):
            pts = sorted((r["sparsity"], r["test_error_mean"], r["test_error_std"])
                         for r in mine if r["criterion"] == criterion)
            s, m, sd = zip(*pts)
            ax.errorbar([100 * (1 - v) for v in s], m, yerr=sd, marker="o", capsize=3,
                        label=criterion, alpha=0.85)
        dense = [r["test_error_mean"] for r in mine if r["criterion"] == "none"]
        if dense:
            ax.axhline(dense[0], color="black", linewidth=0.8, linestyle="--", label="dense")
        ax.set_xscale("log")
        kept = sorted({100 * (1 - r["sparsity"]) for r in mine if r["criterion"] != "none"})
        ax.set_xticks(kept, [f"{k:.2g}" for k in kept])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_xlabel("weights kept (%), log scale")
        ax.set_ylabel("test error (%)")
        ax.set_title(model)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def error_vs_steps(rows, path, title=""):
    """Test error (mean ± std over seeds) against the training budget (log x), one
    panel per (model, sparsity) with dense, SNIP and random; `rows` as
    `snip_budgets.summary` returns them."""
    panels = sorted({(r["dataset"], r["model"], r["sparsity"]) for r in rows if r["criterion"] != "dense"})
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6),
                             squeeze=False)
    for ax, (dataset, model, sparsity) in zip(axes[0], panels):
        for criterion, s in (("dense", 0.0), ("snip", sparsity), ("random", sparsity)):
            pts = sorted((r["steps"], r["test_error_mean"], r["test_error_std"]) for r in rows
                         if (r["dataset"], r["model"], r["criterion"], r["sparsity"])
                         == (dataset, model, criterion, s))
            if pts:
                n, m, sd = zip(*pts)
                ax.errorbar(n, m, yerr=sd, marker="o", capsize=3, alpha=0.85,
                            label=criterion if criterion == "dense" else f"{criterion} {sparsity:.0%}")
        ax.set_xscale("log")
        ax.set_xlabel("training steps (log scale)")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{model} {sparsity:.0%} ({dataset})", fontsize=9)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def where_pai_stands(rows, path, title="", models=()):
    """Test error (mean ± std) against sparsity, one column per model: on top each PaI
    mask (solid) with its shuffled (dashed), reinitialized (dash-dot) and inverted
    (dotted) checks in its colour; below the PaI masks against the during-training
    methods of `during_training.registry` (GMP, SET, RigL) and IMP.
    `rows` as `where_pai_stands.summarize` returns them; dense as a grey line; one column
    per model, in the order of `models`."""
    pai = ("snip", "grasp", "synflow", "random_erk")
    later = tuple(registry.METHODS) + ("imp",)  # the during-training methods, then IMP
    colours = dict(zip(pai + later, itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])))
    styles = {"": "-", "shuffle": "--", "reinit": "-.", "invert": ":"}
    order = list(models)  # the caller's order; any other model of `rows` after them
    models = sorted({r["model"] for r in rows}, key=lambda m: (order.index(m) if m in order else len(order), m))
    fig, axes = plt.subplots(2, len(models), figsize=(6.2 * len(models), 8.8), squeeze=False)
    fig.subplots_adjust(hspace=0.32, wspace=0.28)
    for column, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        for row, methods in enumerate((
                [(m, m + (f"_{c}" if c else ""), c) for m in pai for c in styles],
                [(m, m, "") for m in pai + later])):
            ax = axes[row][column]
            for base, method, check in methods:
                pts = sorted((r["sparsity"], r["test_error_mean"], r["test_error_std"])
                             for r in mine if r["method"] == method)
                if not pts:
                    continue
                s, m, sd = zip(*pts)
                ax.errorbar([100 * v for v in s], m, yerr=sd, marker="o", markersize=3, capsize=2,
                            color=colours[base], linestyle=styles[check], label=method, alpha=0.85)
            dense = [r["test_error_mean"] for r in mine if r["method"] == "dense"]
            if dense:
                ax.axhline(dense[0], color="grey", linewidth=0.8, label="dense")
            ax.set_yscale("log")
            # plain numbers on the log axis (the errors span less than a decade but for
            # collapsed masks at chance): 12, 12.5, ... rather than 1.25×10^1
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="both", labelsize=7)
            ax.set_xlabel("sparsity (%)")
            ax.set_ylabel("test error (%), log scale")
            ax.set_title(f"{model}: {'PaI masks and their sanity checks' if row == 0 else 'PaI vs GMP, SET, RigL, IMP'}",
                         fontsize=9)
            ax.legend(fontsize=6, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
