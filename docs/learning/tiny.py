import json, sys, time, torch, torch.nn as nn, torch.nn.functional as F
from pathlib import Path
from xiqa.data.dataset import load_split
from xiqa.training.metrics import roc_auc
torch.set_num_threads(1); torch.manual_seed(0)
ds = sys.argv[1]; size = {'objectcxr':128,'lvot':112}[ds]; pool = sys.argv[2]
def blk(i,o): return nn.Sequential(nn.Conv2d(i,o,3,padding=1,bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o,o,3,padding=1,bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
class Net(nn.Module):
    def __init__(s):
        super().__init__(); s.f = nn.Sequential(blk(1,16), blk(16,32), blk(32,64), blk(64,64)); s.fc = nn.Linear(64,2)
    def forward(s,x):
        h = s.f(x); h = h.amax((2,3)) if pool=='max' else h.mean((2,3)); return s.fc(h)
m = Net(); opt = torch.optim.Adam(m.parameters(), 1e-3)
tr, va, te = (load_split(Path(__import__('os').environ.get('XIQA_PROJECT', '.')), ds, s, size) for s in ('train','val','test'))
norm = lambda x: (x.float()/255 - 0.5)/0.25
def ev(sp):
    m.eval()
    with torch.no_grad(): p = torch.softmax(m(norm(sp.images)),1)[:,1].numpy()
    return float(roc_auc(sp.labels.numpy(), p))
g = torch.Generator().manual_seed(0); t0=time.perf_counter()
for ep in range(1, 13):
    m.train(); perm = torch.randperm(len(tr), generator=g); tot=0
    for s in range(0, len(tr)-15, 16):
        idx = perm[s:s+16]; x = norm(tr.images[idx]); y = tr.labels[idx]
        f = torch.rand(16, generator=g) < .5; x[f] = x[f].flip(-1)
        loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step(); tot += loss.item()*16
    print(json.dumps(dict(ds=ds, pool=pool, epoch=ep, loss=tot/len(tr), val_auc=ev(va), test_auc=ev(te), s=round(time.perf_counter()-t0,1))), flush=True)
