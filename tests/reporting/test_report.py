"""The paper's tables and figures: the plotted series are the evaluation data, and `paper_tables`
asks for exactly the runs they need."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.cli import report as report_stage
from stages.cli import seeds as seeds_stage
from stages.evaluation.bootstrap import METRICS
from stages.reporting import figures, seeds, table1
from stages.reporting.figures import sweep_figure, sweep_table
from tests.conftest import REPO, tiny_config

MODELS = ["teacher", "student_soft_corrected"]
CATEGORIES = pd.DataFrame({"category_id": [1, 2, 3, 4], "name": list("abcd"), "frequency": ["r", "c", "f", "f"],
                           "instance_count": [2, 30, 400, 0]})  # fmt: skip


def _eval_dir(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for k, model in enumerate(MODELS):
        out = root / "eval" / model
        out.mkdir(parents=True)
        edges = np.linspace(0, 1, 16)
        counts = rng.integers(0, 20, 15)
        counts[3] = 0  # an empty bin is not drawn
        pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": counts,
                      "confidence": (edges[:-1] + edges[1:]) / 2, "accuracy": rng.uniform(0, 1, 15)}).to_csv(
            out / "reliability.csv", index=False)  # fmt: skip
        pd.DataFrame({"category_id": [1, 2, 3, 4], "name": list("abcd"), "frequency": ["r", "c", "f", "f"],
                      "ap": [0.1 + k, 0.2, 0.5, np.nan]}).to_csv(out / "per_class_ap.csv", index=False)  # fmt: skip
        segm = {key: 10.0 * (k + 1) for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")}
        segm |= {"AP-Fixed": 11.0 * (k + 1), "APr-Fixed": 12.0 * (k + 1), "APc-Fixed": None, "APf-Fixed": 9.0,
                 "AP-Pool": 8.0 * (k + 1)}
        metrics = {"segm": segm, "bbox": segm, "ece": 0.2 - 0.1 * k, "detections_per_class": 151,
                   "ece_per_frequency": {"r": 0.3 - k * 0.1, "c": 0.2, "f": 0.1}}  # fmt: skip
        (out / "metrics.json").write_text(json.dumps(metrics))
    return root / "eval"


def test_fig3_plots_each_models_filled_bins_with_its_ece(tmp_path: Path) -> None:
    eval_dir = _eval_dir(tmp_path)
    data = figures.reliability_data(eval_dir, table1.load_metrics(eval_dir, MODELS))
    fig = figures.reliability_figure(data)
    assert [ax.get_title() for ax in fig.axes] == ["teacher  ECE=0.200", "student_soft_corrected  ECE=0.100"]
    for ax, model in zip(fig.axes, MODELS):
        rows = data[(data["model"] == model) & (data["count"] > 0)]
        accuracy_bars = ax.containers[0]
        np.testing.assert_allclose([bar.get_height() for bar in accuracy_bars], rows["accuracy"])
        np.testing.assert_allclose([bar.get_x() for bar in accuracy_bars], rows["bin_lower"])


def test_fig4_plots_per_class_ap_against_instances_coloured_by_frequency(tmp_path: Path) -> None:
    data = figures.per_class_data(_eval_dir(tmp_path), MODELS, CATEGORIES)
    fig = figures.per_class_figure(data)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["r", "c", "f"]
    points = {c.get_label(): c.get_offsets() for c in ax.collections}
    np.testing.assert_allclose(points["r"], [[2, 10.0]])  # teacher: class a, 2 instances, AP 0.1
    np.testing.assert_allclose(points["c"], [[30, 20.0]])
    assert len(points["f"]) == 2  # class d (no instance, AP undefined) sits at x = 1


def test_fig2_has_one_line_per_variant_over_the_fractions(tmp_path: Path) -> None:
    runs = []
    for variant, offset in (("onehot", 0), ("similarity_frequency", 5)):
        for fraction in (0.1, 0.5, 1.0):
            path = tmp_path / f"{variant}_{fraction}.json"
            path.write_text(json.dumps({"segm": {"AP": 20 * fraction + offset, "APr": 10 * fraction + offset}, "ece": 0.1}))
            runs.append({"smoothing": variant, "fraction": fraction, "metrics": str(path)})
    table = sweep_table(runs)
    assert table[["AP_low", "APr_high"]].isna().all().all()  # no intervals: NaN, and no error bars
    fig = sweep_figure(table)
    for ax, metric, scale in zip(fig.axes, ("AP", "APr"), (20, 10)):
        assert ax.get_title() == metric
        assert not ax.collections
        lines = {line.get_label(): line.get_xydata() for line in ax.get_lines()}
        assert set(lines) == {"one-hot", "similarity + frequency smoothing"}  # the kinds' registered labels
        np.testing.assert_allclose(lines["similarity + frequency smoothing"], [[10, scale * 0.1 + 5], [50, scale * 0.5 + 5],
                                                                   [100, scale + 5]])  # fmt: skip


def _sweep_runs(tmp_path: Path) -> list[dict]:
    """Two kinds at two fractions, each fraction with its bootstrap intervals.csv as stages.cli.bootstrap
    writes it (the kinds are the model names; similarity_frequency - onehot is the comparison)."""
    runs = []
    for fraction, gain in ((0.1, 4.0), (1.0, 0.5)):
        rows = []
        for kind, ap in (("onehot", 20.0), ("similarity_frequency", 20.0 + gain)):
            path = tmp_path / f"{kind}_{fraction}.json"
            path.write_text(json.dumps({"segm": {"AP": ap, "APr": ap / 2}, "ece": 0.1}))
            rows += [{"what": kind, "metric": m, "value": v, "low": v - 1, "high": v + 2}
                     for m, v in zip(METRICS, [ap, ap / 2, *[ap] * (len(METRICS) - 2)])]
            rows.append({"what": kind, "metric": "APr - AP", "value": -ap / 2, "low": -ap / 2 - 1, "high": -ap / 2 + 1})
            runs.append({"smoothing": kind, "fraction": fraction, "metrics": str(path),
                         "intervals": str(tmp_path / f"intervals_frac{fraction:g}.csv")})
        rows += [{"what": "similarity_frequency - onehot", "metric": m, "value": gain, "low": gain - 1.5, "high": gain + 1.5}
                 for m in METRICS]
        pd.DataFrame(rows).to_csv(tmp_path / f"intervals_frac{fraction:g}.csv", index=False)
    return runs


def test_fig2_draws_each_points_interval_and_tabulates_the_differences_between_kinds(tmp_path: Path) -> None:
    runs = _sweep_runs(tmp_path)
    table = sweep_table(runs)
    onehot = table[table["variant"] == "onehot"]
    np.testing.assert_allclose(onehot[["AP", "AP_low", "AP_high", "APr", "APr_low", "APr_high"]].to_numpy(),
                               [[20, 19, 22, 10, 9, 12]] * 2)
    fig = sweep_figure(table)
    intervals = fig.axes[0].collections  # one set of vertical interval lines per kind
    assert len(intervals) == 2
    segments = intervals[1].get_segments()  # similarity_frequency at 10% and 100%: [low, high]
    np.testing.assert_allclose([[seg[0][1], seg[1][1]] for seg in segments], [[23, 26], [19.5, 22.5]])

    differences = figures.sweep_differences(runs)
    assert list(differences.columns) == ["fraction", "comparison", "metric", "value", "low", "high"]
    assert set(differences["comparison"]) == {"similarity_frequency - onehot"}
    assert set(differences["metric"]) == set(table1.DIFFERENCE_METRICS)  # APc, APf, ... are not differences shown
    ap = differences[differences["metric"] == "AP"].set_index("fraction")
    np.testing.assert_allclose(ap.loc[[0.1, 1.0], ["value", "low", "high"]].to_numpy(), [[4, 2.5, 5.5], [0.5, -1, 2]])
    md = figures.sweep_markdown(differences)
    assert "| 10% | similarity_frequency - onehot | +4.0 [+2.5, +5.5] |" in md
    assert "| 100% | similarity_frequency - onehot | +0.5 [-1.0, +2.0] |" in md


def test_fig2_names_the_intervals_file_that_breaks_its_contract(tmp_path: Path) -> None:
    runs = _sweep_runs(tmp_path)
    broken = tmp_path / "intervals_frac0.1.csv"
    pd.read_csv(broken).drop(columns=["low"]).to_csv(broken, index=False)
    with pytest.raises(ValueError, match=r"intervals_frac0.1.csv: intervals lack the columns \['low'\]"):
        sweep_table(runs)
    broken.write_text("")
    with pytest.raises(ValueError, match="intervals_frac0.1.csv: not a bootstrap intervals CSV"):
        figures.sweep_differences(runs)
    runs[0]["intervals"] = str(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="missing.csv: no such intervals file"):
        sweep_table(runs)
    runs = _sweep_runs(tmp_path)  # intact files again
    frame = pd.read_csv(broken)
    frame[frame["what"] != "similarity_frequency"].to_csv(broken, index=False)
    with pytest.raises(ValueError, match=r"intervals_frac0.1.csv: no interval for \['similarity_frequency/AP'"):
        sweep_table(runs)
    # another fraction's (or a stale) file: its values are not the teachers' metrics.json
    runs = _sweep_runs(tmp_path)
    broken.write_text((tmp_path / "intervals_frac1.csv").read_text())
    with pytest.raises(ValueError, match=r"intervals_frac0.1.csv: similarity_frequency AP is 20.5, but \S+ says 24.0"):
        sweep_table(runs)


def _report_inputs(tmp_path: Path) -> list[str]:
    """ccece.parquet, the bootstrap's intervals and two benchmark files for the report CLI."""
    pd.DataFrame({"category_id": [1, 2, 3, 4], "name": list("abcd"), "frequency": ["r", "c", "f", "f"],
                  "n_detections": [3, 10, 40, 0], "accuracy": [0.6, 0.5, 0.4, np.nan],
                  "confidence": [0.2, 0.5, 0.5, np.nan], "ccece": [0.4, 0.0, -0.1, 0.0],
                  "ccece_se": [0.25, 0.1, 0.05, np.nan], "delta": [0.1, 0.0, -0.1, -0.05]}).to_parquet(
        tmp_path / "ccece.parquet")  # fmt: skip
    rows = [{"what": m, "metric": k, "value": 10.0 * (i + 1), "low": 10.0 * (i + 1) - 2, "high": 10.0 * (i + 1) + 3}
            for i, m in enumerate(MODELS) for k in METRICS if k != "ECE"]
    rows += [{"what": m, "metric": "ECE", "value": 0.2 - 0.1 * i, "low": 0.15 - 0.1 * i, "high": 0.25 - 0.1 * i}
             for i, m in enumerate(MODELS)]
    rows += [{"what": "student_soft_corrected - teacher", "metric": k, "value": 10.0, "low": 4.0 if k == "AP" else -1.0,
              "high": 15.0} for k in METRICS if k != "ECE"]
    rows.append({"what": "student_soft_corrected - teacher", "metric": "ECE", "value": -0.1, "low": -0.15, "high": -0.02})
    # each model's gap APr - AP (the premise's P1): the teacher's interval below 0, the student's across it
    rows += [{"what": m, "metric": "APr - AP", "value": -3.0 + 2 * i, "low": -5.0 + 2 * i, "high": -1.0 + 2 * i}
             for i, m in enumerate(MODELS)]
    pd.DataFrame(rows).to_csv(tmp_path / "intervals.csv", index=False)
    for job, seconds in (("train_teacher_train85", 135.5), ("split", 1.2)):
        (tmp_path / f"{job}.tsv").write_text("s\th:m:s\tmax_rss\tmax_vms\n"
                                             f"{seconds}\t0:02:15\t1500.5\t3000\n")
    return ["--ccece", str(tmp_path / "ccece.parquet"), "--intervals", str(tmp_path / "intervals.csv"),
            "--benchmarks", str(tmp_path / "split.tsv"), str(tmp_path / "train_teacher_train85.tsv")]


def test_report_cli_writes_tables_figures_and_their_data(tmp_path: Path) -> None:
    eval_dir = _eval_dir(tmp_path)
    CATEGORIES.to_parquet(tmp_path / "categories.parquet")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "results")))
    report_stage.main(["--config", str(config), "--eval-dir", str(eval_dir), "--models", *MODELS, "--evalset", "val",
                       "--categories", str(tmp_path / "categories.parquet"), *_report_inputs(tmp_path),
                       "--out-dir", str(tmp_path / "report")])  # fmt: skip
    out = tmp_path / "report"
    table = pd.read_csv(out / "table1.csv")
    assert list(table["model"]) == MODELS and list(table["paper_AP"]) == [54.0, 56.8]
    assert table["AP_low"].tolist() == [8.0, 18.0] and table["APr_high"].tolist() == [13.0, 23.0]
    # Dave et al.'s AP-Fixed (and AP-Pool) and the ECE, each with its interval; the paper has no AP-Fixed
    assert table["AP-Fixed"].tolist() == [11.0, 22.0] and table["APr-Fixed"].tolist() == [12.0, 24.0]
    assert table["AP-Fixed_low"].tolist() == [8.0, 18.0] and table["APr-Fixed_high"].tolist() == [13.0, 23.0]
    assert table["AP-Pool"].tolist() == [8.0, 16.0] and table["ECE_low"].tolist() == pytest.approx([0.15, 0.05])
    assert table["paper_AP-Fixed"].isna().all() and table["paper_APr-Fixed"].isna().all()
    markdown = (out / "table1.md").read_text()
    header = markdown.splitlines()[1]
    assert header.startswith("| model | description | AP | APr | APc | APf | AP-Fixed | APr-Fixed | AP-Pool | ECE |")
    assert "| teacher | Supervised + non-unif. smooth. + class corr. | 10.0 [8.0, 13.0] |" in markdown
    assert "| 11.0 [8.0, 13.0] | 12.0 [8.0, 13.0] | 8.0 [8.0, 13.0] | 0.200 [0.150, 0.250] |" in markdown
    assert "| 54.0 | 47.0 | - | - | 0.220 |" in markdown  # paper AP, APr, AP-Fixed, APr-Fixed, ECE
    assert "AP-Fixed: the top 151 detections of each class" in markdown
    assert ("| student_soft_corrected - teacher | +10.0 [+4.0, +15.0] | True | +10.0 [-1.0, +15.0] | False "
            "| +10.0 [-1.0, +15.0] | False | +10.0 [-1.0, +15.0] | False | +10.0 [-1.0, +15.0] | False "
            "| -0.100 [-0.150, -0.020] | False |") in markdown
    assert "| model | ECE | ECE_r | ECE_c | ECE_f | paper_ECE |" in markdown
    assert "| teacher | 0.200 | 0.300 | 0.200 | 0.100 | 0.220 |" in markdown
    timings = pd.read_csv(out / "timings.csv")  # slowest first
    assert timings["job"].tolist() == ["train_teacher_train85", "split"] and timings["seconds"].tolist() == [135.5, 1.2]
    assert "| train_teacher_train85 | 135.5 | 0:02:15 |" in markdown
    for name in ("fig3_reliability", "fig4_per_class_ap"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert set(pd.read_csv(out / f"{name}.csv")["model"]) == set(MODELS)
    ccece = pd.read_csv(out / "figS1_ccece.csv")  # r, c, f, then by CCECE
    assert ccece["name"].tolist() == ["a", "b", "c", "d"]
    np.testing.assert_allclose(ccece["low"][:3], [0.4 - 1.96 * 0.25, -1.96 * 0.1, -0.1 - 1.96 * 0.05])
    assert ccece["delta"].tolist() == [0.1, 0.0, -0.1, -0.05]
    assert (out / "figS1_ccece.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "fig5_ccece.png").exists()  # the paper's Fig. 5 is the qualitative one (rule fig5)
    fig1 = pd.read_csv(out / "fig1_ap_apr.csv")
    assert list(fig1.columns) == list(figures.FIG1_COLUMNS)
    assert fig1[["model", "metric"]].values.tolist() == [[m, k] for m in MODELS for k in ("AP", "APr")]
    assert fig1["low"].tolist() == [8.0, 8.0, 18.0, 18.0] and fig1["paper"].tolist() == [54.0, 47.0, 56.8, 57.3]
    assert (out / "fig1_ap_apr.png").read_bytes()[:4] == b"\x89PNG"


def test_fig1_draws_each_rows_ap_and_apr_with_its_interval_and_the_papers_beside() -> None:
    frame = pd.DataFrame({"model": ["teacher", "student_labeled_only"],
                          "description": ["Supervised teacher", "Control: teacher continued"],
                          "AP": [40.0, 42.0], "APr": [30.0, 20.0], "AP_low": [38.0, 41.0], "AP_high": [43.0, 44.0],
                          "APr_low": [25.0, np.nan], "APr_high": [33.0, np.nan],
                          "paper_AP": [54.0, np.nan], "paper_APr": [47.0, np.nan]})  # fmt: skip
    data = figures.fig1_data(frame)
    assert list(data.columns) == list(figures.FIG1_COLUMNS)
    assert data[["model", "metric", "value", "low", "high"]].values.tolist()[:2] == [
        ["teacher", "AP", 40.0, 38.0, 43.0], ["teacher", "APr", 30.0, 25.0, 33.0]]
    ax = figures.fig1_figure(data).axes[0]
    ours = {c.get_label(): c for c in ax.containers if "this run" in str(c.get_label())}
    assert [b.get_height() for b in ours["AP (this run)"]] == [40.0, 42.0]
    assert [b.get_height() for b in ours["APr (this run)"]] == [30.0, 20.0]
    # the interval lines span the interval: the teacher's APr from 25 to 33; the control's APr has none
    intervals = {c.get_label(): c.get_segments() for c in ax.collections}
    assert [[seg[0][1], seg[1][1]] for seg in intervals["APr 95% interval"]] == [[25.0, 33.0]]
    # a point outside its interval (possible for a percentile interval) keeps the interval as it is
    shifted = data.copy()
    shifted.loc[(shifted["model"] == "teacher") & (shifted["metric"] == "AP"), "value"] = 37.0  # below [38, 43]
    ax = figures.fig1_figure(shifted).axes[0]
    segments = {c.get_label(): c.get_segments() for c in ax.collections}["AP 95% interval"]
    assert [segments[0][0][1], segments[0][1][1]] == [38.0, 43.0]
    # the paper's bars only where the paper has the row (not the control)
    paper = {c.get_label(): [b.get_height() for b in c] for c in ax.containers if "paper" in str(c.get_label())}
    assert paper == {"AP (paper, LVIS v1)": [54.0], "APr (paper, LVIS v1)": [47.0]}


def test_report_refuses_intervals_or_metrics_without_the_fixed_metrics(tmp_path: Path) -> None:
    eval_dir = _eval_dir(tmp_path)
    inputs = _report_inputs(tmp_path)
    intervals = pd.read_csv(tmp_path / "intervals.csv")
    old = intervals[~intervals["metric"].isin(["AP-Fixed", "ECE"])]
    with pytest.raises(ValueError, match=r"intervals.csv: no interval for \['teacher/AP-Fixed'"):
        table1.check_intervals(old, MODELS, tmp_path / "intervals.csv")
    metrics = json.loads((eval_dir / "teacher" / "metrics.json").read_text())
    del metrics["segm"]["AP-Pool"]
    (eval_dir / "teacher" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"teacher/metrics.json: metrics.json lacks \['segm.AP-Pool'\]"):
        table1.load_metrics(eval_dir, MODELS)
    assert inputs


def test_seeds_table_shows_table1s_metrics_each_seeds_differences_and_p1(tmp_path: Path) -> None:
    runs, interval_files = [], {}
    for seed in (0, 1):
        eval_dir = _eval_dir(tmp_path / f"s{seed}")
        runs += [(seed, m, eval_dir / m / "metrics.json") for m in MODELS]
        _report_inputs(tmp_path / f"s{seed}")
        interval_files[seed] = tmp_path / f"s{seed}" / "intervals.csv"
    # seed 1's teacher: a gap whose interval crosses 0; the student's rows would say otherwise
    frame = pd.read_csv(interval_files[1])
    gap = (frame["what"] == "teacher") & (frame["metric"] == "APr - AP")
    frame.loc[gap, ["value", "low", "high"]] = [-1.5, -4.0, 0.5]
    frame.to_csv(interval_files[1], index=False)
    intervals = {seed: table1.read_intervals(path, MODELS, ["student_soft_corrected - teacher"])
                 for seed, path in interval_files.items()}
    table = seeds.seed_metrics(runs)
    assert list(table.columns) == ["seed", "model", *table1.INTERVAL_METRICS]
    summary = seeds.seed_summary(table)
    assert summary.set_index("model").loc["teacher", "AP-Fixed"] == "11.0 +- 0.0"
    assert summary.set_index("model").loc["teacher", "ECE"] == "0.200 +- 0.000"
    differences = seeds.seed_differences(intervals)
    assert set(differences["metric"]) == set(table1.DIFFERENCE_METRICS)
    # P1 per seed is the teacher's own APr - AP row, not the student's
    rare_gaps = seeds.seed_rare_gaps(intervals)
    assert list(rare_gaps.columns) == seeds.P1_COLUMNS
    assert rare_gaps[["seed", "value", "low", "high", "holds"]].values.tolist() == [[0, -3.0, -5.0, -1.0, True],
                                                                                     [1, -1.5, -4.0, 0.5, False]]
    markdown = seeds.seeds_markdown(table, differences, rare_gaps)
    assert "| seed | comparison | dAP | dAPr | dAP-Fixed | dAPr-Fixed | dAP-Pool | dECE |" in markdown
    assert ("| 1 | student_soft_corrected - teacher | +10.0 [+4.0, +15.0] | +10.0 [-1.0, +15.0] | +10.0 [-1.0, +15.0] "
            "| +10.0 [-1.0, +15.0] | +10.0 [-1.0, +15.0] | -0.100 [-0.150, -0.020] |") in markdown
    assert "| 0 | 10.0 | 10.0 | -3.0 [-5.0, -1.0] | yes |" in markdown
    assert "| 1 | 10.0 | 10.0 | -1.5 [-4.0, +0.5] | no |" in markdown
    # a seed without rare ground truth: P1 is undefined, shown as "-", not as failed
    frame.loc[gap, ["value", "low", "high"]] = float("nan")
    frame.loc[(frame["what"] == "teacher") & (frame["metric"] == "APr"), "value"] = float("nan")
    undefined = seeds.seed_rare_gaps({1: frame})
    assert undefined["holds"].tolist() == [None]
    assert "| 1 | 10.0 | - | - | - |" in seeds.seeds_markdown(table, differences, undefined)


def test_seeds_cli_checks_each_seeds_intervals_for_its_models_and_comparisons(tmp_path: Path, capsys) -> None:
    """The seeds stage names a seed's intervals.csv that lacks one of Table 1's comparisons (or the
    P1 gap), and a manifest whose seeds disagree with the runs'."""
    eval_dir = _eval_dir(tmp_path)
    _report_inputs(tmp_path)
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([{"seed": 3, "model": m, "metrics": str(eval_dir / m / "metrics.json")} for m in MODELS]))
    manifest = tmp_path / "intervals.json"
    outs = [f"--out-{k}={tmp_path / k}.out" for k in ("table", "differences", "p1", "md")]
    manifest.write_text(json.dumps([{"seed": 3, "intervals": str(tmp_path / "intervals.csv")}]))
    seeds_stage.main(["--runs", str(runs), "--intervals", str(manifest), *outs])
    p1 = pd.read_csv(tmp_path / "p1.out")
    assert p1[["seed", "value", "holds"]].values.tolist() == [[3, -3.0, True]]
    intervals = pd.read_csv(tmp_path / "intervals.csv")
    without = intervals[intervals["what"] != "student_soft_corrected - teacher"]
    without.to_csv(tmp_path / "without.csv", index=False)
    manifest.write_text(json.dumps([{"seed": 3, "intervals": str(tmp_path / "without.csv")}]))
    with pytest.raises(ValueError, match=r"without.csv: no interval for \['student_soft_corrected - teacher/AP'"):
        seeds_stage.main(["--runs", str(runs), "--intervals", str(manifest), *outs])
    intervals[intervals["metric"] != "APr - AP"].to_csv(tmp_path / "no_gap.csv", index=False)
    manifest.write_text(json.dumps([{"seed": 3, "intervals": str(tmp_path / "no_gap.csv")}]))
    with pytest.raises(ValueError, match=r"no_gap.csv: no interval for \['teacher/APr - AP'"):
        seeds_stage.main(["--runs", str(runs), "--intervals", str(manifest), *outs])
    for records in ([{"seed": 4, "intervals": str(tmp_path / "intervals.csv")}],  # another seed
                    [{"seed": 3, "intervals": str(tmp_path / "intervals.csv")}] * 2):  # a seed twice
        manifest.write_text(json.dumps(records))
        with pytest.raises(SystemExit):
            seeds_stage.main(["--runs", str(runs), "--intervals", str(manifest), *outs])
        assert "one intervals file per seed" in capsys.readouterr().err
    # a seed without a teacher has no P1
    runs.write_text(json.dumps([{"seed": 3, "model": "student_soft_corrected",
                                 "metrics": str(eval_dir / "student_soft_corrected" / "metrics.json")}]))
    manifest.write_text(json.dumps([{"seed": 3, "intervals": str(tmp_path / "intervals.csv")}]))
    with pytest.raises(SystemExit):
        seeds_stage.main(["--runs", str(runs), "--intervals", str(manifest), *outs])
    assert "no teacher under seeds [3]" in capsys.readouterr().err


def test_ccece_figure_draws_the_interval_and_the_shrunk_value() -> None:
    frame = pd.DataFrame({"category_id": [1, 2], "name": ["a", "b"], "frequency": ["r", "f"], "n_detections": [4, 0],
                          "ccece": [0.3, 0.0], "ccece_se": [0.1, np.nan], "delta": [0.2, 0.05]})
    data = figures.ccece_data(frame)
    fig = figures.ccece_figure(data)
    ax = fig.axes[0]
    bars = [c for c in ax.containers]  # one errorbar: the class without detections has no interval
    assert len(bars) == 1
    shrunk = [line.get_ydata()[0] for line in ax.lines if line.get_marker() == "D" and len(line.get_ydata())]
    assert shrunk == [0.2, 0.05]


def _dry_run_jobs(target: str, config: dict, tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", target, "--cores", "1", "--configfile", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stats = done.stdout.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


@pytest.mark.parametrize("use_tuned", [False, True])
def test_paper_tables_builds_exactly_the_runs_the_tables_and_figures_need(tmp_path: Path, use_tuned: bool) -> None:
    config = tiny_config(tmp_path / "results")
    config["sweep"].update(fractions=[0.5, 1.0], variants=["onehot", "similarity_frequency"])
    config["student"]["variants"] = ["onehot", "soft_corrected"]
    config["teacher"]["use_tuned"] = use_tuned
    config["tuning"] = {"teacher": {"eps": [0.05, 0.1] if use_tuned else [], "gamma": [1.5]}, "student": {}}
    jobs = _dry_run_jobs("paper_tables", config, tmp_path)
    assert jobs["experiment_teacher"] == 2 * 2 + (2 if use_tuned else 0)  # Fig. 2 sweep (+ the eps grid)
    assert jobs["train_student"] == 2 and jobs["evaluate"] == 1 + 2  # Table 1's rows
    assert jobs["fig2"] == jobs["report"] == jobs["paper_tables"] == 1
    assert ("tune_teacher" in jobs) == use_tuned
    assert "tune_student" not in jobs  # student.use_tuned is off


def test_the_tuning_grid_reads_structured_points_from_its_manifest(tmp_path: Path) -> None:
    """A grid point travels as its config overlay (numbers and names as the config holds them); the
    choice is the best point's overlay (AP first, then APr)."""
    from stages.cli import tune
    from stages.data.artifacts import ArtifactError, read_manifest

    runs = []
    for i, (lam, select_on, ap, apr) in enumerate([(0.0, "teacher_score", 70.0, 60.0), (0.5, "corrected_score", 72.0, 55.0),
                                                   (2.0, "teacher_score", 72.0, 58.0)]):
        path = tmp_path / f"m{i}.json"
        path.write_text(json.dumps({"segm": {"AP": ap, "APr": apr}, "ece": 0.1}))
        runs.append({"overlay": {"student": {"lambda": lam, "select_on": select_on}}, "metrics": str(path)})
    manifest = tmp_path / "grid.json"
    manifest.write_text(json.dumps(runs))
    tune.main(["--manifest", str(manifest), "--out-table", str(tmp_path / "t.csv"), "--out-choice", str(tmp_path / "c.json")])
    table = pd.read_csv(tmp_path / "t.csv")
    assert table.columns.tolist() == ["student.lambda", "student.select_on", "AP", "APr", "ECE"]
    assert json.loads((tmp_path / "c.json").read_text()) == {"student": {"lambda": 2.0, "select_on": "teacher_score"}}

    # an integer key's choice stays an int (100.0 would be refused by the schema and by range())
    for run, iterations in zip(runs, (100, 200, 400)):
        run["overlay"]["student"]["iterations"] = iterations
    manifest.write_text(json.dumps(runs))
    tune.main(["--manifest", str(manifest), "--out-table", str(tmp_path / "t.csv"), "--out-choice", str(tmp_path / "c.json")])
    choice = json.loads((tmp_path / "c.json").read_text())
    assert choice == {"student": {"lambda": 2.0, "select_on": "teacher_score", "iterations": 400}}
    assert isinstance(choice["student"]["iterations"], int)
    from stages.utils.config import load_config, merged_over, validate_config

    assert validate_config(merged_over(load_config(), choice))["student"]["iterations"] == 400

    manifest.write_text(json.dumps([runs[0], {"metrics": "m.json"}]))
    with pytest.raises(ArtifactError, match=r"grid.json: record 1 lacks \['overlay'\]"):
        read_manifest(manifest, ("overlay", "metrics"))
