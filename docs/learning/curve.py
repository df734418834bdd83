"""Learning curve of one fine-tuning run; prints JSON lines.
usage: curve.py ARCH DS START EPOCHS LR N_FT THREADS [AUG]
START: scratch | demo (the demo's fractal stand-in: 32x32 @64px, 2 ep) | fractal100 (100x40 @64, 4 ep)"""
import json, math, sys, time
from pathlib import Path
import torch, torch.nn.functional as F
from xiqa.data.dataset import load_split
from xiqa.data.transforms import standardise
from xiqa.training.metrics import roc_auc
from xiqa.models import zoo
from xiqa.params import PretrainParams
from xiqa.training.pretrain import fractal_data, pretrain

arch, ds, start, epochs, lr, n_ft, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
aug = len(sys.argv) > 8 and sys.argv[8] == "aug"
optname = sys.argv[9] if len(sys.argv) > 9 else "sgd"
torch.set_num_threads(threads)
size = int(__import__('os').environ.get('SIZE', {'objectcxr': 128, 'lvot': 112}[ds]))
amp = arch.startswith("resnet")
tag = dict(size=size, arch=arch, ds=ds, start=start, n_ft=n_ft, lr=lr, aug=aug, bf16=amp, opt=optname)
log = lambda **k: print(json.dumps({**tag, **k}), flush=True)
torch.manual_seed(1)
t0 = time.perf_counter()
if start == "scratch":
    model = zoo.build(arch)
else:
    ck = Path(f"start-{start}-{arch}.pt")
    p = {"demo": PretrainParams(classes=32, per_class=32, image_size=64, epochs=2, batch_size=32, lr=0.025),
         "fractal100": PretrainParams(classes=100, per_class=40, image_size=64, epochs=4, batch_size=64, lr=0.1),
         "fractal40": PretrainParams(classes=40, per_class=100, image_size=64, epochs=5, batch_size=32, lr=0.05),
         }[start]
    model = zoo.build(arch, num_classes=p.classes)
    if ck.exists():
        model.load_state_dict(torch.load(ck, weights_only=True))
    else:
        hist = pretrain(model, fractal_data(p), p, on_epoch=lambda e: log(phase="pretext", epoch=e.epoch, loss=e.pretext_loss, acc=e.pretext_accuracy, seconds=time.perf_counter()-t0))
        torch.save(model.state_dict(), ck)
    zoo.reset_head(model, arch, 2)
    h = zoo.head(model, arch)
    assert h.out_features == 2, h
layout = torch.channels_last
model = model.to(memory_format=layout)
tr, va, te = (load_split(Path(__import__('os').environ.get('XIQA_PROJECT', '.')), ds, s, size) for s in ('train', 'val', 'test'))
tr = tr.head(n_ft)
def evaluate(split):
    model.eval(); ps = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        for s in range(0, len(split), 64):
            ps.append(torch.softmax(model(standardise(split.images[s:s+64]).contiguous(memory_format=layout)).float(), 1)[:, 1])
    p = torch.cat(ps).numpy(); y = split.labels.numpy()
    return float(((p > .5) == y).mean()), float(roc_auc(y, p))
opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True) if optname == 'sgd' else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
bs = 16; steps_per = len(tr) // bs; total = steps_per * epochs; step = 0
g = torch.Generator().manual_seed(1)
t0 = time.perf_counter()
for ep in range(1, epochs + 1):
    model.train(); perm = torch.randperm(len(tr), generator=g); tot = seen = 0
    for s in range(steps_per):
        idx = perm[s*bs:(s+1)*bs]
        x = standardise(tr.images[idx]); y = tr.labels[idx]
        if aug:
            f = torch.rand(len(idx), generator=g) < 0.5; x[f] = x[f].flip(-1)
            dy, dx = (torch.randint(-8, 9, (2,), generator=g)).tolist()
            x = torch.roll(x, (dy, dx), (-2, -1))
        x = x.contiguous(memory_format=layout)
        warm = min(1.0, (step + 1) / steps_per)
        for gr in opt.param_groups: gr['lr'] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward(); opt.step(); step += 1
        tot += loss.item() * len(y); seen += len(y)
    tsec = time.perf_counter() - t0
    vacc, vauc = evaluate(va); tacc, tauc = evaluate(te)
    log(phase='finetune', epoch=ep, loss=tot/seen, val_acc=vacc, val_auc=vauc, test_acc=tacc, test_auc=tauc, seconds=round(tsec, 1), images=step*bs)
