"""Results: K* per point, the K* = c1/B + c2 fits, results.json and its summary."""

import json
import os

import numpy as np
from scipy.optimize import least_squares

from sniptf import run_dir
from sniptf.studies import plots as plots_lib
from sniptf.studies.common import markdown_table
from sniptf.studies.data_parallelism.probes import PROBE_LEARNING_RATE
from sniptf.studies.data_parallelism.probes import run_probes
from sniptf.studies.data_parallelism.trial import grid
from sniptf.studies.data_parallelism.trial import steps_to_result


BOOTSTRAP = 1000  # resamples of the (B, K*) points behind each interval
# a resample must have at least 3 distinct B (more points than the fit's 2 constants), and
# an interval needs 4 distinct B to draw from: with 3, most resamples repeat a point
MIN_RESAMPLE_BATCH_SIZES = 3
MIN_INTERVAL_BATCH_SIZES = 4


def _fit_log(b, log_k, starts):
    def residual(theta):
        return np.log(np.exp(theta[0]) / b + np.exp(theta[1])) - log_k

    best = min((least_squares(residual, s) for s in starts), key=lambda r: r.cost)
    return best.x, best.fun


def fit_steps(batch_sizes, k_star, *, bootstrap=BOOTSTRAP, seed=0):
    """Fits K* = c1/B + c2 (c1, c2 > 0) by least squares on log K*.

    Returns:
        dict with `c1`, `c2`, `b_crit` = c1/c2 (where K* is twice its
        minimum, S_min = c2: McCandlish et al. 2018), `r2_log` (the R² of log K*
        under the fit), `rms_log_residual`, and 95% bootstrap intervals
        `c1_ci`, `c2_ci`, `b_crit_ci` (`[lo, hi]`: percentiles of the fits to
        `bootstrap` resamples of the (B, K*) points with replacement, seeded by
        `seed`; a resample with fewer than `MIN_RESAMPLE_BATCH_SIZES` distinct B
        is drawn again: two points fit the two constants exactly, so such a
        resample is an interpolation, not a fit). With fewer than
        `MIN_INTERVAL_BATCH_SIZES` distinct batch sizes the intervals are not
        identifiable: they are None and `interval_note` says why (as with
        `bootstrap=0`).

    Raises:
        ValueError: fewer than two points, or non-positive values.
    """
    b = np.asarray(batch_sizes, np.float64)
    k = np.asarray(k_star, np.float64)
    if b.shape != k.shape or b.size < 2:
        raise ValueError(f"Need at least two (B, K*) pairs of equal length. Received: "
                         f"batch_sizes={list(batch_sizes)}, k_star={list(k_star)}")
    if np.any(b <= 0) or np.any(k <= 0) or not np.all(np.isfinite(k)):
        raise ValueError(f"Expected positive batch sizes and steps. Received: "
                         f"batch_sizes={list(batch_sizes)}, k_star={list(k_star)}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"Expected bootstrap to be an int >= 0. Received: bootstrap={bootstrap!r}")
    log_k = np.log(k)
    starts = [(np.log(k[0] * b[0]), np.log(k[-1]))]
    design = np.stack([1 / b, np.ones_like(b)], axis=1)
    c1, c2 = np.linalg.lstsq(design, k, rcond=None)[0]
    if c1 > 0 and c2 > 0:
        starts.append((np.log(c1), np.log(c2)))
    theta, residuals = _fit_log(b, log_k, starts)
    c1, c2 = (float(v) for v in np.exp(theta))
    total = float(np.sum((log_k - log_k.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residuals ** 2)) / total if total > 0 else 1.0
    distinct = int(np.unique(b).size)
    out = {"c1": c1, "c2": c2, "b_crit": c1 / c2, "r2_log": r2,
           "rms_log_residual": float(np.sqrt(np.mean(residuals ** 2))),
           "c1_ci": None, "c2_ci": None, "b_crit_ci": None, "bootstrap": 0,
           "distinct_batch_sizes": distinct,
           "interval_note": None if bootstrap else "no bootstrap (bootstrap=0)"}
    if bootstrap and distinct < MIN_INTERVAL_BATCH_SIZES:
        out["interval_note"] = (f"not identifiable: {distinct} distinct batch sizes reach the goal "
                                f"(an interval needs {MIN_INTERVAL_BATCH_SIZES})")
    elif bootstrap:
        rng = np.random.default_rng(seed)
        draws = []
        while len(draws) < bootstrap:
            pick = rng.integers(0, b.size, b.size)
            if np.unique(b[pick]).size < MIN_RESAMPLE_BATCH_SIZES:
                continue
            t, _ = _fit_log(b[pick], log_k[pick], [theta])
            draws.append(np.exp(t))
        draws = np.array(draws)
        interval = lambda v: [float(x) for x in np.percentile(v, [2.5, 97.5])]
        out.update(c1_ci=interval(draws[:, 0]), c2_ci=interval(draws[:, 1]),
                   b_crit_ci=interval(draws[:, 0] / draws[:, 1]), bootstrap=bootstrap)
    return out


def goal_errors(spec):
    """The goals of a spec, strictest first (`--goal_errors`, else the workload's goal)."""
    return sorted(spec.get("goal_errors") or [spec["workload"]["goal_error"]])


def _at_boundary(best, mine, space):
    """The searched metaparameters whose value in any of the point's best trials (every
    trial that reaches K*: ties count, whatever their Sobol order) is the smallest or
    largest the point's trials tried: K* found there may fall further past the edge (an
    upper bound)."""
    edges = []
    for p in space:
        tried = [t["params"][p["name"]] for t in mine if p["name"] in t["params"]]
        if len(set(tried)) >= 3 and any(t["params"][p["name"]] in (min(tried), max(tried))
                                        for t in best if p["name"] in t["params"]):
            edges.append(p["name"])
    return edges


def collect(spec, records):
    """The `trials`, `points` and `fits` parts of results.json from engine records.

    Every point and fit is given per goal error (`goal_errors`): a trial's K for a
    looser goal is the first step of its trace at or below it (trials run until the
    strictest). A trial stopped by the incumbent cut-off counts as `cut_off`, not as
    `not_reached`.
    """
    points_of = grid(spec)
    space = spec["workload"]["space"]
    trials = []
    for r in sorted(records, key=lambda r: (r["study"], r["index"])):
        sparsity, batch_size = points_of[r["study"]]
        trials.append({"sparsity": sparsity, "batch_size": batch_size, "sobol_index": r["index"],
                       "params": r["params"], "status": r["status"], "steps": r.get("steps"),
                       "cut_off": bool(r.get("cut_off")), "trace": r.get("trace", []),
                       "seconds": r.get("seconds")})
    strictest = spec["workload"]["goal_error"]

    def k_of(t, goal):
        if t["trace"]:
            return steps_to_result(t["trace"], goal)
        # a record without its trace: its own status, valid for goals it was run to
        return t["steps"] if t["status"] == "reached" and goal >= strictest else None

    points = []
    for goal in goal_errors(spec):
        for s in spec["sparsities"]:
            for b in spec["batch_sizes"]:
                mine = [t for t in trials if t["sparsity"] == s and t["batch_size"] == b]
                reached = [(k_of(t, goal), t) for t in mine]
                reached = [(k, t) for k, t in reached if k is not None]
                k, best = min(reached, key=lambda kt: kt[0]) if reached else (None, None)
                ties = [t for kt, t in reached if kt == k]  # every trial that reaches K*
                unreached = [t for t in mine if k_of(t, goal) is None]
                points.append({
                    "goal_error": goal, "sparsity": s, "batch_size": b, "k_star": k,
                    "reached": len(reached),
                    "not_reached": sum(t["status"] != "diverged" and not t["cut_off"] for t in unreached),
                    "cut_off": sum(t["status"] != "diverged" and t["cut_off"] for t in unreached),
                    "diverged": sum(t["status"] == "diverged" for t in unreached),
                    "trials": len(mine), "best_params": best["params"] if best else None,
                    "best_sobol_indices": [t["sobol_index"] for t in ties],
                    "at_boundary": _at_boundary(ties, mine, space) if best else []})
    fits = []
    for goal in goal_errors(spec):
        for s in spec["sparsities"]:
            pts = [p for p in points if p["goal_error"] == goal and p["sparsity"] == s and p["k_star"]]
            if len(pts) >= 2:
                fits.append({"goal_error": goal, "sparsity": s,
                             "batch_sizes": [p["batch_size"] for p in pts],
                             **fit_steps([p["batch_size"] for p in pts], [p["k_star"] for p in pts])})
    return trials, points, fits


def _interval(ci, fmt, fit=None):
    """`[lo, hi]` in `fmt`, a bound past 1e5 in 2 significant digits (a bootstrap of few
    points can put c2 near 0, and B_crit's upper bound at 1e11); without one, why not."""
    if not ci:
        note = (fit or {}).get("interval_note") or ""
        return "[not identifiable]" if note.startswith("not identifiable") else "—"
    number = lambda v: fmt.format(v) if abs(v) < 1e5 else f"{v:.2g}"
    return f"[{number(ci[0])}, {number(ci[1])}]"


def summary_markdown(results):
    """Tables for RESULTS: K* per point and goal (boundary points marked), the fits with
    their intervals beside B_simple, and L per sparsity (mean ± std over seeds)."""
    spec = results["workload"]
    sizes = spec["batch_sizes"]
    text = ""
    for goal in goal_errors(spec):
        k_rows = []
        for s in spec["sparsities"]:
            cells = []
            for b in sizes:
                p = next(p for p in results["points"] if p["sparsity"] == s and p["batch_size"] == b
                         and p.get("goal_error", goal) == goal)
                if p["k_star"]:
                    cells.append(f"{p['k_star']}" + ("†" if p.get("at_boundary") else ""))
                else:
                    cells.append(f"— ({p['not_reached']}/{p.get('cut_off', 0)}/{p['diverged']})")
            k_rows.append([f"{100 * s:g}%"] + cells)
        text += (f"K* to {goal:.2%} validation error (— (not reached / cut off / diverged): no trial "
                 "reached it; † a best trial's metaparameters — any trial that reaches K* — are at the "
                 "edge of those tried, so K* is an upper bound):\n\n")
        text += markdown_table(["sparsity"] + [f"B={b}" for b in sizes], k_rows) + "\n"
    init_noise = {}
    later = {}
    for n in results["noise_scale"]:
        if n["step"] == 0:
            init_noise.setdefault(n["sparsity"], []).append(n["b_simple"])
        else:
            later.setdefault(n["sparsity"], []).append(n["b_simple"])
    fit_rows = []
    for f in results["fits"]:
        s = f["sparsity"]
        fit_rows.append([f"{f.get('goal_error', spec['workload']['goal_error']):.2%}", f"{100 * s:g}%",
                         f"{f['c1']:.4g}", f"{f['c2']:.4g}",
                         f"{f['b_crit']:.1f} {_interval(f.get('b_crit_ci'), '{:.1f}', f)}",
                         f"{f['r2_log']:.3f}", f"{f.get('rms_log_residual', float('nan')):.3f}",
                         f"{np.median(init_noise[s]):.1f}" if s in init_noise else "—",
                         f"{np.median(later[s]):.1f}" if s in later else "—"])
    text += ("Fit K* = c1/B + c2 per goal and sparsity (95% bootstrap interval; not identifiable "
             f"where fewer than {MIN_INTERVAL_BATCH_SIZES} distinct B reach the goal), beside the "
             "gradient noise scale:\n\n")
    text += markdown_table(["goal", "sparsity", "c1", "c2", "B_crit = c1/c2 [95%]", "R² (log K)",
                            "RMS log residual", "B_simple at init (median)",
                            "B_simple in training (median)"], fit_rows)
    rows = results.get("lipschitz_summary") or []
    if rows:
        text += (f"\nLocal Lipschitz constant L (mean over the probes of a run; mean ± std over "
                 f"{rows[0]['seeds']} init seeds), lr {rows[0]['learning_rate']:g} for every sparsity; "
                 f"the means {'rise' if rows[0]['monotonic'] else 'do not rise'} monotonically with "
                 "sparsity:\n\n")
        text += markdown_table(["sparsity", "L (mean ± std)", "seeds"],
                               [[f"{100 * r['sparsity']:g}%", f"{r['mean']:.2f} ± {r['std']:.2f}",
                                 r["seeds"]] for r in rows])
    return text


def report(engine, study_dir, *, probe_batch_size=None, probe_steps=1000, probe_every=100,
           probe_learning_rate=PROBE_LEARNING_RATE, probe_seeds=(0, 1, 2), probe_examples=0,
           probe_noise_every=None, plots=True, log=print):
    """Writes `<study_dir>/results.json` (the schema in docs/data_parallelism.md), `summary.md` and the plots.

    Returns:
        The results dict.
    """
    spec = engine.spec()
    if spec is None:
        raise ValueError("The storage has no prepared spec; run prepare first.")
    trials, points, fits = collect(spec, engine.records())
    os.makedirs(study_dir, exist_ok=True)  # before the probes: their cache goes there
    lipschitz, noise, summary = [], [], []
    if probe_batch_size:
        lipschitz, noise, summary = run_probes(
            spec, points, batch_size=probe_batch_size, steps=probe_steps, every=probe_every,
            learning_rate=probe_learning_rate, seeds=tuple(probe_seeds), probe_examples=probe_examples,
            noise_every=probe_noise_every, cache_path=os.path.join(study_dir, "probes.json"), log=log)
    results = {"workload": {k: v for k, v in spec.items() if k != "studies"}, "trials": trials,
               "points": points, "fits": fits, "lipschitz": lipschitz, "lipschitz_summary": summary,
               "noise_scale": noise, "counts": engine.counts(),
               "probe": {"batch_size": probe_batch_size, "steps": probe_steps, "every": probe_every,
                         "learning_rate": probe_learning_rate, "seeds": list(probe_seeds),
                         "examples": probe_examples, "noise_every": probe_noise_every}
               if probe_batch_size else None}
    os.makedirs(study_dir, exist_ok=True)
    run_dir.write_text(os.path.join(study_dir, "results.json"), json.dumps(results, indent=1))
    run_dir.write_text(os.path.join(study_dir, "summary.md"), summary_markdown(results))
    if plots:
        plots_lib.data_parallelism(results, study_dir)
    return results
