"""Learning curves of the #23 probes (docs/learning/*.jsonl) -> docs/learning/curves.png."""
import json, sys
from pathlib import Path
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
here = Path(sys.argv[1])
runs = {}
for f in sorted(here.glob("*.jsonl")):
    for line in f.read_text().splitlines():
        d = json.loads(line)
        if d.get("phase", "finetune") != "finetune":
            continue
        if "arch" in d:
            label = f"{d['arch']} {d.get('size', 128)}px {d['start']} {d.get('opt', 'sgd')} lr {d['lr']:g}"
        else:
            label = f"4-block CNN 128px global-{d['pool']}-pool adam"
        runs.setdefault(label, []).append((d["epoch"] * 1120, d.get("loss"), d["test_auc"]))
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for label, pts in runs.items():
    x = [p[0] for p in pts]
    a.plot(x, [p[1] for p in pts], marker="o", label=label)
    b.plot(x, [p[2] for p in pts], marker="o", label=label)
a.axhline(0.6931, color="k", ls="--", lw=0.8); a.text(0, 0.70, "ln 2", fontsize=8)
a.set(xlabel="training images seen", ylabel="training loss (epoch mean)", ylim=(0, 2))
b.axhline(0.5, color="k", ls="--", lw=0.8)
b.set(xlabel="training images seen", ylabel="test AUC (Object-CXR phantoms, 140 scans)", ylim=(0.3, 1.0))
b.legend(fontsize=7, loc="upper right")
fig.suptitle("Object-CXR phantoms, 1,120 training scans, 1 CPU thread per run")
fig.tight_layout(); fig.savefig(here / "curves.png", dpi=110)

# summary.md: per run, the images seen, the last epoch's training loss and test AUC, the best test AUC
rows = ["| run | fine-tuning images seen | last training loss | last test AUC | best test AUC |", "|---|---|---|---|---|"]
for label, pts in runs.items():
    rows.append(f"| {label} | {pts[-1][0]:,} | {pts[-1][1]:.3f} | {pts[-1][2]:.3f} | {max(p[2] for p in pts):.3f} |")
pre = []
for f in sorted(here.glob("*.jsonl")):
    for line in f.read_text().splitlines():
        d = json.loads(line)
        if d.get("phase") == "pretext":
            pre.append(f"| {d['arch']} {d['start']} | {d['epoch']} | {d['loss']:.3f} | {d['acc']:.3f} | {d['seconds']:.0f} |")
(here / "summary.md").write_text("\n".join(rows + ["", "| pretext (fractal) | epoch | loss | accuracy | seconds since start |",
                                                  "|---|---|---|---|---|", *pre]) + "\n")
