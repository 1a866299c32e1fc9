"""Results: K* per point, the K* = c1/B + c2 fits, results.json and its summary."""

import json
import os

import numpy as np
from scipy.optimize import least_squares

from sniptf import run_dir
from sniptf.studies import plots as plots_lib
from sniptf.studies.common import markdown_table
from sniptf.studies.data_parallelism.probes import run_probes
from sniptf.studies.data_parallelism.trial import grid


def fit_steps(batch_sizes, k_star):
    """Fits K* = c1/B + c2 (c1, c2 > 0) by least squares on log K*.

    Returns:
        dict with `c1`, `c2`, `b_crit` = c1/c2 (where K* is twice its
        minimum, S_min = c2: McCandlish et al. 2018) and `r2_log`, the R² of
        log K* under the fit.

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
    log_k = np.log(k)

    def residual(theta):
        return np.log(np.exp(theta[0]) / b + np.exp(theta[1])) - log_k

    starts = [(np.log(k[0] * b[0]), np.log(k[-1]))]
    design = np.stack([1 / b, np.ones_like(b)], axis=1)
    c1, c2 = np.linalg.lstsq(design, k, rcond=None)[0]
    if c1 > 0 and c2 > 0:
        starts.append((np.log(c1), np.log(c2)))
    best = min((least_squares(residual, s) for s in starts), key=lambda r: r.cost)
    c1, c2 = (float(v) for v in np.exp(best.x))
    total = float(np.sum((log_k - log_k.mean()) ** 2))
    r2 = 1.0 - float(np.sum(best.fun ** 2)) / total if total > 0 else 1.0
    return {"c1": c1, "c2": c2, "b_crit": c1 / c2, "r2_log": r2}


def collect(spec, records):
    """The `trials`, `points` and `fits` parts of results.json from engine records."""
    points_of = grid(spec)
    trials = []
    for r in sorted(records, key=lambda r: (r["study"], r["index"])):
        sparsity, batch_size = points_of[r["study"]]
        trials.append({"sparsity": sparsity, "batch_size": batch_size, "sobol_index": r["index"],
                       "params": r["params"], "status": r["status"], "steps": r.get("steps"),
                       "cut_off": bool(r.get("cut_off")), "trace": r.get("trace", []),
                       "seconds": r.get("seconds")})
    points = []
    for s in spec["sparsities"]:
        for b in spec["batch_sizes"]:
            mine = [t for t in trials if t["sparsity"] == s and t["batch_size"] == b]
            reached = [t for t in mine if t["status"] == "reached"]
            best = min(reached, key=lambda t: t["steps"]) if reached else None
            points.append({"sparsity": s, "batch_size": b, "k_star": best["steps"] if best else None,
                           "reached": len(reached),
                           "not_reached": sum(t["status"] == "not_reached" for t in mine),
                           "diverged": sum(t["status"] == "diverged" for t in mine),
                           "trials": len(mine), "best_params": best["params"] if best else None})
    fits = []
    for s in spec["sparsities"]:
        pts = [p for p in points if p["sparsity"] == s and p["k_star"]]
        if len(pts) >= 2:
            fits.append({"sparsity": s, **fit_steps([p["batch_size"] for p in pts],
                                                    [p["k_star"] for p in pts])})
    return trials, points, fits


def summary_markdown(results):
    """Tables for RESULTS: K* per point, the fits beside B_simple, mean L."""
    spec = results["workload"]
    sizes = spec["batch_sizes"]
    k_rows = []
    for s in spec["sparsities"]:
        cells = []
        for b in sizes:
            p = next(p for p in results["points"] if p["sparsity"] == s and p["batch_size"] == b)
            cells.append(f"{p['k_star']}" if p["k_star"] else f"— ({p['not_reached']}/{p['diverged']})")
        k_rows.append([f"{100 * s:g}%"] + cells)
    text = "K* (steps to the goal; — means no trial reached it):\n\n"
    text += markdown_table(["sparsity"] + [f"B={b}" for b in sizes], k_rows)
    init_noise = {n["sparsity"]: n["b_simple"] for n in results["noise_scale"] if n["step"] == 0}
    later = {}
    for n in results["noise_scale"]:
        if n["step"] > 0:
            later.setdefault(n["sparsity"], []).append(n["b_simple"])
    lips = {entry["sparsity"]: entry["mean"] for entry in results["lipschitz"]}
    fit_rows = []
    for f in results["fits"]:
        s = f["sparsity"]
        fit_rows.append([f"{100 * s:g}%", f"{f['c1']:.4g}", f"{f['c2']:.4g}", f"{f['b_crit']:.1f}",
                         f"{f['r2_log']:.3f}",
                         f"{init_noise[s]:.1f}" if s in init_noise else "—",
                         f"{np.median(later[s]):.1f}" if s in later else "—",
                         f"{lips[s]:.2f}" if lips.get(s) is not None else "—"])
    text += "\nFit K* = c1/B + c2 per sparsity, beside the gradient noise scale and smoothness:\n\n"
    text += markdown_table(["sparsity", "c1", "c2", "B_crit = c1/c2", "R² (log K)", "B_simple at init",
                            "B_simple in training (median)", "mean L"], fit_rows)
    return text


def report(engine, study_dir, *, probe_batch_size=None, probe_steps=1000, probe_every=100,
           plots=True, log=print):
    """Writes `<study_dir>/results.json` (the schema in docs/data_parallelism.md), `summary.md` and the plots.

    Returns:
        The results dict.
    """
    spec = engine.spec()
    if spec is None:
        raise ValueError("The storage has no prepared spec; run prepare first.")
    trials, points, fits = collect(spec, engine.records())
    lipschitz, noise = [], []
    if probe_batch_size:
        lipschitz, noise = run_probes(spec, points, batch_size=probe_batch_size, steps=probe_steps,
                                      every=probe_every, cache_path=os.path.join(study_dir, "probes.json"),
                                      log=log)
    results = {"workload": {k: v for k, v in spec.items() if k != "studies"}, "trials": trials,
               "points": points, "fits": fits, "lipschitz": lipschitz, "noise_scale": noise,
               "counts": engine.counts()}
    os.makedirs(study_dir, exist_ok=True)
    run_dir.write_text(os.path.join(study_dir, "results.json"), json.dumps(results, indent=1))
    run_dir.write_text(os.path.join(study_dir, "summary.md"), summary_markdown(results))
    if plots:
        plots_lib.data_parallelism(results, study_dir)
    return results
