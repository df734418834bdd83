"""The paper's Tables 2–7 and xiqa's Tables 8 (localisation beyond the Pointing Game) and 9
(sanity checks), built from the study's logged MLflow runs (never from models).

Input is a runs DataFrame in the shape ``mlflow.search_runs`` returns (``run_id``,
``tags.<k>``, ``metrics.<k>`` columns), holding one study's aggregate and study runs (see
:mod:`xiqa.schema`). :func:`build_tables` reads it (:class:`~xiqa.report.study_runs.StudyRuns`)
into :class:`~xiqa.report.table.Table` objects — methods as rows, conditions as columns — which
:mod:`xiqa.report.render` writes as Markdown, CSV, LaTeX and HTML. Accuracies are means ± sample
standard deviations (ddof = 1) over seeds, with the 95 % bootstrap interval over test images in
brackets. Tables 2–6 end with the no-information baselines (rows "chance (uniform peak)" and
"centre peak": value and bootstrap interval, no std since they do not depend on the model) and a
row stating τ in input pixels, which a note also derives from the paper's τ.
"""

from __future__ import annotations

import pandas as pd

from xiqa import schema as S
from xiqa.report.study_runs import StudyRuns, arch_label, ds_label, metric_value, tag_value
from xiqa.report.table import ColumnKey, Table, TableCell

STD_NOTE = "mean ± std over seeds (std: sample standard deviation, ddof = 1); [95 % bootstrap CI over test images]"


def condition_label(study: StudyRuns, ds: str, arch: str, cond: str) -> str:
    """A condition's column label: ``SR (stand-in pretraining)`` when its backbone did not
    start from ImageNet, ``… (skipped)`` when it has no numbers (a table note says why)."""
    label = S.CONDITION_LABELS.get(cond, cond)
    row = study.aggregates.get((ds, arch, cond))
    if row is None or tag_value(row, S.STATUS) == "skipped":
        return f"{label} (skipped)"
    if cond == "sr" and any(s != "imagenet" for s in tag_value(row, "start").split(",") if s):
        return f"{label} (stand-in pretraining)"
    return label


def start_notes(study: StudyRuns, ds: str) -> list[str]:
    """One note per architecture naming where its trained and SR backbones started (SPEC 3)."""
    notes = []
    for arch in study.archs.get(ds, []):
        starts = {cond: tag_value(row, "start") for cond in ("trained", "sr")
                  if (row := study.aggregates.get((ds, arch, cond))) is not None and tag_value(row, "start")}
        if starts:
            said = "; ".join(f"{S.CONDITION_LABELS[c]}: {v.replace(',', ', ')}" for c, v in starts.items())
            notes.append(f"Start of {arch_label(arch)}'s backbone — {said} (imagenet: ImageNet weights; "
                         "stand-in:<run>: the pretrain stage's MLflow run, no ImageNet weights offline; "
                         "scratch: random).")
    return notes


def precision_notes(study: StudyRuns, ds: str) -> list[str]:
    """One note naming the precision each architecture's trained models were trained in
    (``train.<ds>.precision``; ``auto`` resolved per run, :mod:`xiqa.training.precision`)."""
    said = [f"{arch_label(arch)} {tag_value(row, 'precision').replace(',', ' / ')}"
            for arch in study.archs.get(ds, [])
            if (row := study.aggregates.get((ds, arch, "trained"))) is not None and tag_value(row, "precision")]
    if not said:
        return []
    return [f"Training precision ({ds_label(ds)}): {'; '.join(said)} (fp32, or bf16 autocast where the CPU has "
            "the instructions and a probe found it faster: train.<dataset>.precision: auto)."]


def _skip_notes(study: StudyRuns, ds: str | None = None) -> list[str]:
    notes = []
    for (d, arch, cond), row in study.aggregates.items():
        if (ds is None or d == ds) and tag_value(row, S.STATUS) == "skipped":
            notes.append(f"{S.CONDITION_LABELS.get(cond, cond)} {arch_label(arch)} skipped: {tag_value(row, S.REASON)}")
    return list(dict.fromkeys(notes))


def _method_rows(study: StudyRuns) -> tuple[list[str], dict[str, str]]:
    labels = {m: S.method_label(m) for m in study.methods}
    return [labels[m] for m in study.methods], labels


def _method_ids(t: Table, study: StudyRuns) -> Table:
    """``t`` with its method rows' ids: the method names of the metric keys."""
    t.ids.update({S.method_label(m): m for m in study.methods})
    return t


BASELINE_NOTE = ("No-information baselines: chance (uniform peak) = the exact expected accuracy of a peak drawn "
                 "uniformly over the input pixels; centre peak = the accuracy of a peak at the centre pixel "
                 "((W − 1) // 2, (H − 1) // 2). They depend only on the test boxes and τ, not on the model, "
                 "so they have no std over seeds; [95 % bootstrap CI over test images].")


def _add_baselines_and_tau(t: Table, study: StudyRuns, columns: list[tuple[str, str, str, str]]) -> None:
    """Append the baseline rows and the τ row to a Pointing Game table, for its accuracy
    columns ``(column, dataset, arch, condition)``, and the notes that explain them."""
    rows = [S.BASELINE_LABELS[b] for b in S.BASELINES] + [S.TAU_LABEL]
    t.rows += rows
    t.ids |= {S.BASELINE_LABELS[b]: f"baseline_{b}" for b in S.BASELINES} | {S.TAU_LABEL: S.TAU}
    for col, ds, arch, cond in columns:
        for b in S.BASELINES:
            t.cells[(S.BASELINE_LABELS[b], col)] = study.baseline_cell(ds, arch, cond, b)
        t.cells[(S.TAU_LABEL, col)] = study.tau_cell(ds, arch, cond)
    t.notes.append(BASELINE_NOTE)
    t.notes += [study.tau_note(ds) for ds in dict.fromkeys(ds for _, ds, _, _ in columns)]


# --------------------------------------------------------------------------- the tables
RANDOMISATION_TABLE = {"lvot": 3, "objectcxr": 4}
ARCHITECTURE_TABLE = {"lvot": 5, "objectcxr": 6}


def smoothing_table(study: StudyRuns) -> Table:
    """Table 2: trained models' Pointing Game accuracy with smoothing off and on."""
    rows, labels = _method_rows(study)
    t = _method_ids(Table("table2", "Table 2 — Pointing Game accuracy of the trained models, smoothing off / on",
              "method", rows, [], notes=[STD_NOTE, study.smoothing_note()]), study)
    spec = []
    for ds in study.datasets:
        for arch in study.archs[ds]:
            for smoothed in (False, True):
                col = t.add_column(f"{ds_label(ds)} {arch_label(arch)} · smoothing {'on' if smoothed else 'off'}",
                                   ColumnKey(f"{ds}/{arch}/trained", "pg" if smoothed else "pg_raw"))
                spec.append((col, ds, arch, "trained"))
                for m in study.methods:
                    t.cells[(labels[m], col)] = study.pg_cell(ds, arch, "trained", m, smoothed)
    _add_baselines_and_tau(t, study, spec)
    return t


def randomisation_table(study: StudyRuns, ds: str) -> Table:
    """Tables 3 (LVOT) and 4 (Object-CXR): SR / FR / trained, mean ± std over seeds."""
    rows, labels = _method_rows(study)
    n = RANDOMISATION_TABLE.get(ds, 3)
    t = _method_ids(Table(f"table{n}-{ds}", f"Table {n} — Pointing Game accuracy on {ds_label(ds)}: semi-randomised "
                          "(SR), fully randomised (FR) and trained models", "method", rows, [],
                          notes=[STD_NOTE, "Smoothed maps."]), study)
    archs = study.archs[ds]
    spec = []
    for arch in archs:
        for cond in S.CONDITIONS:
            label = condition_label(study, ds, arch, cond)
            col = t.add_column(label if len(archs) == 1 else f"{arch_label(arch)} · {label}",
                               ColumnKey(f"{ds}/{arch}/{cond}", "pg"))
            spec.append((col, ds, arch, cond))
            for m in study.methods:
                t.cells[(labels[m], col)] = study.pg_cell(ds, arch, cond, m)
    _add_baselines_and_tau(t, study, spec)
    t.notes += _skip_notes(study, ds) + start_notes(study, ds) + precision_notes(study, ds)
    return t


DOM_NOTE = ("DoM = |mean(A) − mean(B)| over per-seed accuracies (the linear-kernel MMD); MMD: RBF kernel on "
            "the same per-seed accuracies, median-heuristic bandwidth, permutation p-value.")


def architecture_table(study: StudyRuns, ds: str) -> Table:
    """Tables 5 (LVOT) and 6 (Object-CXR): trained means per architecture, DoM and RBF-MMD."""
    rows, labels = _method_rows(study)
    n = ARCHITECTURE_TABLE.get(ds, 5)
    t = _method_ids(Table(f"table{n}-{ds}", f"Table {n} — Pointing Game accuracy of trained models on "
                          f"{ds_label(ds)} per architecture, and their Difference of Means (DoM)", "method", rows, [],
                          notes=[STD_NOTE, DOM_NOTE]), study)
    archs = study.archs[ds]
    for arch in archs:
        col = t.add_column(arch_label(arch), ColumnKey(f"{ds}/{arch}/trained", "pg"))
        for m in study.methods:
            t.cells[(labels[m], col)] = study.pg_cell(ds, arch, "trained", m)
    _add_baselines_and_tau(t, study, [(arch_label(a), ds, a, "trained") for a in archs])
    run = study.studies.get(ds)
    pairs = [(a, b) for i, a in enumerate(archs) for b in archs[i + 1:]]
    for a, b in pairs:
        tail = "" if len(pairs) == 1 else f" {arch_label(a)} vs {arch_label(b)}"
        sfx = S.pair_suffix(a, b, len(archs))
        dom_col = t.add_column(f"DoM{tail}", ColumnKey(f"{ds}/{a}~{b}", "dom", whole=True))
        mmd_col = t.add_column(f"MMD (RBF){tail}", ColumnKey(f"{ds}/{a}~{b}", "mmd", whole=True))
        for m in study.methods:
            if run is None:
                t.cells[(labels[m], dom_col)] = t.cells[(labels[m], mmd_col)] = TableCell(note="no study run")
                continue
            dom = metric_value(run, f"dom/{m}{sfx}")
            t.cells[(labels[m], dom_col)] = TableCell(mean=dom) if dom is not None else TableCell(note="not logged")
            mmd = metric_value(run, f"mmd/{m}{sfx}")
            t.cells[(labels[m], mmd_col)] = (TableCell(mean=mmd, p_value=metric_value(run, f"mmd_p/{m}{sfx}"))
                                             if mmd is not None else TableCell(note="not logged"))
    if len(archs) < 2:
        t.notes.append("Only one architecture in the grid: no DoM.")
    return t


LOCALISATION_NOTE = (
    "Localisation metrics on the boxes as a binary mask at input size (Quantus' definitions, "
    "xiqa.evaluation.localisation): mass = the map's mass inside the mask / its total (energy-based "
    "pointing game); rank = the fraction of the |mask| highest pixels inside the mask; AUC = ROC AUC of "
    "the map values as scores for pixel-in-mask (0.5: no information); top-k = the fraction of the top-k "
    "pixels inside the mask, k a fixed fraction of the image. Smoothed maps; a constant map has no value "
    "and is left out (counted as a constant map).")
LOC_BASELINE_NOTE = ("No-information baselines: uniform map = a constant map, its ties broken by expectation "
                     "(mass = rank = top-k = box area / image area up to the top-k cap, AUC = 0.5); centre "
                     "Gaussian map = a Gaussian at the image centre with σ = a fixed fraction of the side. They "
                     "depend only on the boxes, not on the model: no std over seeds; "
                     "[95 % bootstrap CI over test images].")


def localisation_table(study: StudyRuns, ds: str) -> Table:
    """Table 8 (one per dataset): mass, rank, AUC and top-k per method, architecture and
    condition, mean ± std over seeds [bootstrap CI], with the uniform and centre-Gaussian maps."""
    rows, labels = _method_rows(study)
    t = _method_ids(Table(f"table8-{ds}", f"Table 8 — localisation beyond the Pointing Game on {ds_label(ds)}: "
                          "relevance mass, relevance rank, AUC and top-k intersection", "method", rows, [],
                          notes=[STD_NOTE, LOCALISATION_NOTE, LOC_BASELINE_NOTE]), study)
    archs = study.archs[ds]
    base_rows = [S.LOC_BASELINE_LABELS[b] for b in S.LOC_BASELINES]
    t.rows += base_rows
    t.ids |= {S.LOC_BASELINE_LABELS[b]: f"baseline_{b}" for b in S.LOC_BASELINES}
    for arch in archs:
        for cond in S.CONDITIONS:
            if study.logged(ds, arch, cond)[0] is None:
                continue  # skipped or not in the grid: four columns of the same note say nothing (see notes)
            for k in S.LOC_METRICS:
                label = condition_label(study, ds, arch, cond)
                head = label if len(archs) == 1 else f"{arch_label(arch)} · {label}"
                col = t.add_column(f"{head} · {S.LOC_METRIC_LABELS[k]}", ColumnKey(f"{ds}/{arch}/{cond}", k))
                for m in study.methods:
                    t.cells[(labels[m], col)] = study.loc_cell(ds, arch, cond, k, m)
                for b in S.LOC_BASELINES:
                    t.cells[(S.LOC_BASELINE_LABELS[b], col)] = study.loc_baseline_cell(ds, arch, cond, k, b)
    t.notes += _skip_notes(study, ds) + start_notes(study, ds) + precision_notes(study, ds)
    return t


SANITY_NOTES = (
    ("mean ± std over the trained seeds (std: ddof = 1), each seed the mean over the stage's sample of test "
     "images; pairs with a constant map are left out."),
    ("MPRT (Adebayo et al. 2018): the model's blocks re-initialised cumulatively from the logits down to the "
     "stem; similarity of each map (explain's maps, not smoothed) to the trained model's map of the same "
     "image and class. A method that "
     "depends on the learned weights falls towards 0. Random logit: SSIM of the maps for the predicted and "
     "the other class (low: class-sensitive)."),
)


def sanity_table(study: StudyRuns, ds: str) -> Table:
    """Table 9 (one per dataset): per method and architecture, the MPRT similarity to the trained
    maps after full randomisation (Spearman of |maps|, SSIM) and the random-logit SSIM, mean ±
    std over the trained seeds; a note lists, from these numbers, the methods whose mean
    Spearman stays above :data:`xiqa.schema.MPRT_PASS_THRESHOLD` (they fail the MPRT)."""
    rows, labels = _method_rows(study)
    t = _method_ids(Table(f"table9-{ds}", f"Table 9 — sanity checks on {ds_label(ds)}: similarity to the trained "
                          "maps after full randomisation (MPRT) and between the two classes' maps (random logit)",
                          "method", rows, [], notes=list(SANITY_NOTES)), study)
    fails: dict[str, list[str]] = {}
    logged = False
    for arch in study.archs[ds]:
        row, note = study.logged(ds, arch, "trained")
        ran = row is not None and any(metric_value(row, S.sanity_metric(st, "mean", m)) is not None
                                      for st in S.SANITY_STATS for m in study.methods)
        for stat in S.SANITY_STATS:
            col = t.add_column(S.SANITY_STAT_LABELS[stat] if len(study.archs[ds]) == 1
                               else f"{arch_label(arch)} · {S.SANITY_STAT_LABELS[stat]}",
                               ColumnKey(f"{ds}/{arch}/trained", stat))
            for m in study.methods:
                mean = None if row is None else metric_value(row, S.sanity_metric(stat, "mean", m))
                if mean is None:
                    t.cells[(labels[m], col)] = note or TableCell(note="constant maps" if ran else "not run")
                    continue
                logged = True
                t.cells[(labels[m], col)] = TableCell(mean=mean, std=metric_value(row, S.sanity_metric(stat, "std", m)))
                if stat == "mprt_spearman_final" and mean > S.MPRT_PASS_THRESHOLD:
                    fails.setdefault(arch, []).append(labels[m])
    if not logged:
        t.notes.append("No sanity results: run `dvc repro sanity` (then the report).")
        return t
    for arch in study.archs[ds]:
        failing = ", ".join(fails.get(arch, [])) or "none"
        t.notes.append(f"{arch_label(arch)}: methods whose mean Spearman after full randomisation stays above "
                       f"{S.MPRT_PASS_THRESHOLD:g} (fail the MPRT): {failing}.")
    return t


def classification_table(study: StudyRuns) -> Table:
    """Table 7: test accuracy and ROC AUC of the trained models, mean ± std over seeds."""
    t = Table("table7", "Table 7 — Classification accuracy and ROC AUC of the trained models (test split)",
              "model", [], [], notes=["mean ± std over seeds (std: sample standard deviation, ddof = 1)."])
    for col, name in (("Accuracy", "test_accuracy"), ("AUC", "test_auc")):
        t.add_column(col, ColumnKey("", name))
    for ds in study.datasets:
        for arch in study.archs[ds]:
            row_label = f"{ds_label(ds)} {arch_label(arch)}"
            t.rows.append(row_label)
            t.ids[row_label] = f"{ds}-{arch}"
            row = study.aggregates.get((ds, arch, "trained"))
            for col, name in (("Accuracy", "test_accuracy"), ("AUC", "test_auc")):
                mean = None if row is None else metric_value(row, f"{name}_mean")
                t.cells[(row_label, col)] = (TableCell(mean=mean, std=metric_value(row, f"{name}_std"))
                                             if mean is not None else TableCell(note="not logged"))
        t.notes += start_notes(study, ds) + precision_notes(study, ds)
    return t


def build_tables(runs: pd.DataFrame) -> list[Table]:
    """Every table of the study held in ``runs`` (one study's aggregate + study runs)."""
    study = StudyRuns.from_frame(runs)
    tables = [smoothing_table(study)]
    order = sorted(study.datasets, key=lambda d: RANDOMISATION_TABLE.get(d, 99))
    tables += [randomisation_table(study, ds) for ds in order]
    tables += [architecture_table(study, ds) for ds in order]
    tables.append(classification_table(study))
    tables += [localisation_table(study, ds) for ds in order]
    tables += [sanity_table(study, ds) for ds in order]
    return tables


