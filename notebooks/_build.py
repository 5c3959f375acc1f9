"""Generate the notebooks in this folder from the cell sources below, and execute them.

    python notebooks/_build.py            # write every notebook, run it, save its outputs
    python notebooks/_build.py 03         # only the notebooks whose name contains "03"
    python notebooks/_build.py --no-run   # write the cells only (no outputs)
    FXPRUNE_NB_SMALL=1 python notebooks/_build.py   # the small sizes CI uses

Edit the cells here, not in the .ipynb files, then rebuild; the committed notebooks carry
the outputs of a full-size run (each under 3 minutes on a CPU). ``tests/test_notebooks.py``
runs every ``*.ipynb`` here with ``FXPRUNE_NB_SMALL=1``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
import os, time
import torch, torchvision
import fxprune

SMALL = os.environ.get("FXPRUNE_NB_SMALL") == "1"  # CI sets it: smaller inputs and fewer steps
if SMALL:
    torch.set_num_threads(1)  # CI machines are small and shared; one thread is the fastest there
torch.manual_seed(0)
print(f"fxprune {fxprune.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, small={SMALL}")"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

# ------------------------------------------------------------------------------------------
NOTEBOOKS["01_quickstart"] = [
    ("md", """\
# Quickstart: prune a ResNet, read the report, verify, measure

`fxprune.compile` captures the model with `torch.fx`, finds the channel groups that must be
removed together (DepGraph), ranks channels by group L2 magnitude, and returns a new, smaller
`GraphModule`. Your model is never modified. Everything below runs on a CPU with random weights."""),
    ("code", SETUP),
    ("code", """\
size = 32 if SMALL else 224
model = torchvision.models.resnet18().eval()
x = torch.randn(1, 3, size, size)

small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)  # remove half of every group
report = small.meta["fxprune.report"]
report  # renders as HTML tables in Jupyter; print(report) gives the text version"""),
    ("md", """\
The report lists every prunable group (its size, how many indices it keeps, whether removing
them is *exact*, and the parameter slices it couples) and every channel class that keeps all
its indices, with the reason (graph input, graph output, an op with no rule). The plan alone is
plain data, also rendered as a table, and serializable with `Plan.to_json()`:"""),
    ("code", """\
plan = report.plan
print(f"{len(plan.groups)} groups, {plan.kept_fraction():.0%} of grouped channels kept, {len(plan.to_json())} bytes of JSON")
plan"""),
    ("md", """\
## Verify: masked equals pruned

`fxprune.verify` zeroes, in a copy of the original, every slice the plan removes, runs both
models and compares. Equal outputs prove that the rewrite removed exactly those slices and
nothing else."""),
    ("code", """\
result = fxprune.verify(model, small, x)
print(result)
assert result.passed
print("the original still has", fxprune.count_params(model), "parameters; the pruned one", fxprune.count_params(small))"""),
    ("md", """\
## Latency before and after

Prune at several ratios and measure MACs (`torch.utils.flop_counter`) and median CPU latency
of one forward pass, on one thread (steadier on a shared machine). The figure is measured
here, on this machine; your numbers will differ."""),
    ("code", """\
torch.set_num_threads(1)
models = {"base": model}
for ratio in (0.25, 0.5, 0.75):
    models[f"ratio {ratio}"] = fxprune.compile(model, ratio, example_inputs=x)
points = fxprune.plots.measure(models, x, iters=5 if SMALL else 20)
for label, macs, ms in points:
    print(f"{label:>10}: {macs / 1e6:8.1f} M MACs, {ms:7.2f} ms")
fxprune.plots.latency_vs_macs(points, title=f"ResNet-18, batch 1 at {size}x{size}, CPU, 1 thread")"""),
    ("md", "Per-layer widths before and after (uniform allocation: every group loses half):"),
    ("code", """fxprune.plots.layer_widths(model, small)"""),
    ("md", """\
With `global_ranking=True` the channels of all groups are ranked together, so the widths are
learned rather than uniform; `speedup=2.0` bisects the ratio until the MACs halve:"""),
    ("code", """\
learned = fxprune.compile(model, speedup=2.0, example_inputs=x, global_ranking=True)
print(learned.meta["fxprune.report"])
print(fxprune.verify(model, learned, x))
fxprune.plots.layer_widths(model, learned)"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["02_dependency_graph"] = [
    ("md", """\
# The dependency graph and grouping matrices

DepGraph's point is that a channel cannot be removed from one layer alone: a residual add, a
concatenation or a flatten couples it to other layers, and all of them must lose the same
indices. fxprune finds these *groups* with a union-find over the dims of every node of the
`torch.fx` graph. This notebook draws them for a small model, then draws the grouping matrix
(DepGraph, Fig. 6) for ResNet-18, DenseNet-121 and a ViT."""),
    ("code", SETUP),
    ("code", """\
from torch import nn

class Small(nn.Module):
    \"\"\"A stem, a residual block, a concatenation and a linear head after a flatten.\"\"\"

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.res1 = nn.Conv2d(16, 16, 3, padding=1)
        self.res2 = nn.Conv2d(16, 16, 3, padding=1)
        self.branch_a = nn.Conv2d(16, 8, 1)
        self.branch_b = nn.Conv2d(16, 8, 3, padding=1)
        self.mix = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = x + self.res2(torch.relu(self.res1(x)))                 # residual: stem, res2 coupled
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)  # concat: two groups side by side
        x = torch.nn.functional.adaptive_avg_pool2d(self.mix(x), 4)
        return self.head(x.flatten(1))                              # flatten: 16 groups of 16 features

small_model = Small()
gm = fxprune.analyze(small_model, torch.randn(1, 3, 16, 16))
analysis = gm.meta["fxprune.analysis"]
for c in analysis.classes:
    if c.params and c.data and c.size > 1:
        state = "prunable" if c.prunable else f"pinned: {c.pinned}"
        print(f"group {c.id:3d} size {c.size:3d} {state:32s}", ", ".join(f"{p}[{d}]" for p, d in c.params))"""),
    ("md", """\
Each green circle is a prunable group; grey ones are pinned (here the graph input and the
output logits). A solid edge goes to a layer's output channels (dim 0), a dashed one to its
input channels. The stem's group reaches `stem`, `bn`, `res2` (the residual add) and the inputs
of `res1`, `branch_a` and `branch_b`; `mix`'s input is split into the two concatenated groups."""),
    ("code", """fxprune.plots.dependency_graph(gm)"""),
    ("md", """\
## Grouping matrices (DepGraph, Fig. 6)

Rows and columns are the layers with parameters, in graph order; cell (i, j) is dark when
layers i and j share a group. A plain chain gives small blocks on the diagonal. Residual
connections give long-range blocks (ResNet's stages), dense concatenations give DenseNet's
staircase, and a transformer's residual stream couples every block of the model."""),
    ("code", """\
from matplotlib.figure import Figure

size = 32 if SMALL else 224
x = torch.randn(1, 3, size, size)
vit = torchvision.models.vit_b_16(image_size=size) if SMALL else torchvision.models.vit_b_16()
zoo = {"ResNet-18": torchvision.models.resnet18(), "DenseNet-121": torchvision.models.densenet121(), "ViT-B/16": vit}
fig = Figure(figsize=(18, 6.5), layout="constrained")
for ax, (name, m) in zip(fig.subplots(1, 3), zoo.items()):
    t = time.perf_counter()
    gm_z = fxprune.analyze(m, x)
    fxprune.plots.grouping_matrix(gm_z, ax=ax, title=name)
    names, mat = fxprune.plots.grouping_matrix_data(gm_z)
    print(f"{name}: {len(names)} layers, {len(gm_z.meta['fxprune.analysis'].prunable())} prunable groups, "
          f"analysis {time.perf_counter() - t:.2f}s")
fig"""),
    ("md", """\
The matrices are computed from the same analysis `fxprune.compile` uses; for example the ViT
is pruned and checked like this (approximate groups, such as the channels LayerNorm computes
statistics over, are included unless `exact=True`):"""),
    ("code", """\
small_vit = fxprune.compile(zoo["ViT-B/16"], 0.5, example_inputs=x, exact=True)
print(small_vit.meta["fxprune.report"])
print(fxprune.verify(zoo["ViT-B/16"], small_vit, x))"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["03_group_sparse_learning"] = [
    ("md", """\
# Group sparse learning on Fashion-MNIST (DepGraph, Eq. 4-5 and Fig. 5)

Before pruning, DepGraph trains with a *group* regularizer: every index k of every group is
pushed towards zero with strength `gamma_k`, summed over every parameter slice of the group,
so whole groups of coupled channels become (nearly) zero together and can be removed with
little loss. `fxprune.sparsify(model, x, reg, alpha, scope)` adds its gradient with hooks.

Three arms from one trained baseline, with the same optimizer, steps and batches:
**plain** training, sparse learning **without grouping** (`scope="none"`: each layer is
regularized alone, the paper's ablation) and **with grouping** (`scope="full"`). The
histogram shows the group L2 norms of each (the paper's Fig. 5); then each is pruned to half
its MACs and evaluated without fine-tuning."""),
    ("code", SETUP + """
import copy, gzip
from pathlib import Path
import numpy as np
import torch.nn.functional as F
from torch import nn
torch.set_num_threads(1)  # a small CNN trains fastest on one thread (and deterministically)"""),
    ("md", """\
The data: the original Fashion-MNIST files from the shared data folder (`$FXPRUNE_DATA`, or
`../../shared/data` beside the repository). Nothing is downloaded; when the folder is absent,
the notebook says so and uses a small synthetic set so that it still runs end to end."""),
    ("code", """\
def data_root() -> Path:
    env = os.environ.get("FXPRUNE_DATA")
    return Path(env).expanduser() if env else Path.cwd().resolve().parents[1] / "shared" / "data"

def load_fashion_mnist(split: str):
    raw = data_root() / "fashion-mnist" / "FashionMNIST" / "raw"
    stem = "train" if split == "train" else "t10k"
    with gzip.open(raw / f"{stem}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(raw / f"{stem}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return x, y

def prep(images) -> torch.Tensor:  # [0, 255] -> normalized, average-pooled to 14x14
    x = torch.tensor(np.asarray(images), dtype=torch.float32).div(255).sub(0.286).div(0.353).unsqueeze(1)
    return F.avg_pool2d(x, 2)

N_TRAIN, N_TEST = (2000, 2000) if SMALL else (4000, 5000)
try:
    xs, ys = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(ys == c))[: N_TRAIN // 10] for c in range(10)])
    idx = rng.permutation(idx)
    train = (prep(xs[idx]), torch.tensor(ys[idx]))
    test = (prep(xt[:N_TEST]), torch.tensor(yt[:N_TEST]))
    source = f"Fashion-MNIST from {data_root()}"
except FileNotFoundError as e:
    print(f"Fashion-MNIST not found ({e}); using a small synthetic set instead, accuracies are not meaningful")
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, 1, 14, 14, generator=g)
    def synth(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return protos[y] + 0.8 * torch.randn(n, 1, 14, 14, generator=g), y
    train, test = synth(N_TRAIN), synth(N_TEST)
    source = "synthetic data"
print(f"{source}: train {tuple(train[0].shape)}, test {tuple(test[0].shape)}")"""),
    ("code", """\
def net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )

def fit(model, steps, lr, seed, batch=128):
    \"\"\"SGD with nesterov momentum and a cosine schedule; the batch order depends only on seed.\"\"\"
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for step in range(steps):
        b = torch.randint(0, len(train[0]), (batch,), generator=g)
        loss = F.cross_entropy(model(train[0][b]), train[1][b])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return model

@torch.no_grad()
def accuracy(model) -> float:
    model.eval()
    return (model(test[0]).argmax(1) == test[1]).float().mean().item()

BASE_STEPS, SL_STEPS = (200, 200) if SMALL else (600, 400)
example = train[0][:1]
t = time.perf_counter()
torch.manual_seed(0)
base = fit(net(), BASE_STEPS, 0.1, seed=1)
print(f"baseline: accuracy {accuracy(base):.4f} after {BASE_STEPS} steps ({time.perf_counter() - t:.1f}s)")"""),
    ("code", """\
REG, ALPHA = 1.3e-3, 6.0
arms = {}
for name, scope in [("plain", None), ("sparse, no grouping", "none"), ("sparse, grouping", "full")]:
    t = time.perf_counter()
    m = copy.deepcopy(base)
    handle = fxprune.sparsify(m, example, reg=REG, alpha=ALPHA, scope=scope) if scope else None
    fit(m, SL_STEPS, 0.05, seed=2)          # same steps, same batches for every arm
    if handle is not None:
        handle.remove()                     # the model is exactly as before, minus what training changed
    arms[name] = m
    print(f"{name:>20}: accuracy {accuracy(m):.4f} ({time.perf_counter() - t:.1f}s)")"""),
    ("md", """\
Group L2 norms (over every member slice of the group), each divided by the largest in its
group. Plain training leaves no index near zero; sparse learning piles indices up near zero,
which is what lets a plan remove them cheaply. The paper's Fig. 5 contrasts regularizing each
layer alone with regularizing whole groups: the counts below show how far the two differ on
this model (a short chain CNN, where most groups couple only a conv, its BatchNorm and the
next conv's input, so the two are expected to be close)."""),
    ("code", """\
norms = {name: fxprune.plots.group_norms(m, example) for name, m in arms.items()}
for name, n in norms.items():
    v = torch.cat([g / g.max() for g in n.values()])
    print(f"{name:>20}: {int((v < 0.05).sum())} of {len(v)} group indices below 5% of their group's largest")
fxprune.plots.sparsity_histogram(norms, bins=40)"""),
    ("md", """\
Now prune each arm to half its MACs (`speedup=2.0`, global ranking so the groups that were
driven to zero go first) and evaluate right away, without fine-tuning. `verify` checks each
pruned model against its masked original."""),
    ("code", """\
rows = []
for name, m in list(arms.items()):
    pruned = fxprune.compile(m, speedup=2.0, example_inputs=example, global_ranking=True)
    rep = pruned.meta["fxprune.report"]
    ok = fxprune.verify(m, pruned, example).passed
    rows.append((name, accuracy(m), accuracy(pruned), rep.macs_before / rep.macs_after, ok))
    arms[name + " (pruned)"] = pruned
print(f"{'arm':>20}  {'before':>7}  {'pruned':>7}  {'MACs':>6}  verify")
for name, a0, a1, s, ok in rows:
    print(f"{name:>20}  {a0:7.4f}  {a1:7.4f}  {s:5.2f}x  {'PASS' if ok else 'FAIL'}")
fxprune.plots.layer_widths(arms["sparse, grouping"], arms["sparse, grouping (pruned)"],
                           title="widths kept after sparse learning with grouping, 2x fewer MACs")"""),
    ("md", """\
The accuracies above are from this run (one seed, no fine-tuning). Pruning the plainly
trained model to half its MACs removes channels that still carry signal, so its accuracy
collapses without fine-tuning; after sparse learning the removed groups are nearly zero. The
repository's
`tests/test_sparse_learning.py` checks the claim that matters with a fixed recipe: under
`sparsify`, the group norms of the indices the plan removes fall at least 10x relative to
the kept ones, and after pruning and a brief fine-tune the sparsified model loses less
accuracy than the plainly trained one."""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["04_cli_save_load"] = [
    ("md", """\
# The `fxprune` command, save / load, and export

`fxprune prune MODEL --ratio R --out DIR` prunes, verifies and saves; `fxprune report MODEL`
shows the groups and why channels are pinned; `fxprune bench` measures before and after. The
saved directory holds no pickled code: `plan.json` (the plan), `weights.safetensors` and
`manifest.json` (how to rebuild the architecture, every tensor's shape and dtype, checksums).
`fxprune.load` rebuilds the pruned model from a fresh architecture and loads the weights."""),
    ("code", SETUP + """
import json, subprocess, sys, tempfile
from pathlib import Path

work = Path(tempfile.mkdtemp(prefix="fxprune-nb-"))
size = 32 if SMALL else 224

def fxprune_cli(*args):
    \"\"\"Run the fxprune command (the same as typing `fxprune ...` in a shell).\"\"\"
    r = subprocess.run([sys.executable, "-m", "fxprune.cli", *args, "--no-progress"], capture_output=True, text=True)
    print(r.stdout + r.stderr)
    return r.returncode"""),
    ("code", """\
out = work / "resnet18-half"
rc = fxprune_cli("prune", "torchvision:resnet18", "--ratio", "0.5", "--size", str(size), "--threads", "1", "--out", str(out))
assert rc == 0
print(sorted(p.name for p in out.iterdir()))
print((out / "manifest.json").read_text()[:600], "...")"""),
    ("md", """\
Load it in Python. Without a model, `load` builds the architecture from the manifest's spec
(`torchvision:resnet18`); `load(path, model)` takes a freshly built one instead. The command
seeds the random weights with `--seed 0`, so pruning the same model here gives the same
plan and weights, and the outputs are identical bit for bit:"""),
    ("code", """\
loaded = fxprune.load(out).eval()
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
here = fxprune.compile(model, 0.5, example_inputs=torch.randn(1, 3, size, size))
x = torch.randn(4, 3, size, size)
with torch.no_grad():
    same = torch.equal(loaded(x), here(x))
print("loaded == pruned in this process:", same)
assert same
loaded.meta["fxprune.plan"]  # the plan it was rebuilt with"""),
    ("md", "A corrupted or mismatched directory fails with a message that names what does not match:"),
    ("code", """\
import shutil
broken = work / "broken"
shutil.copytree(out, broken)
(broken / "weights.safetensors").write_bytes((out / "weights.safetensors").read_bytes()[:-8] + bytes(8))
for what, call in [("corrupted weights", lambda: fxprune.load(broken)),
                   ("another architecture", lambda: fxprune.load(out, torchvision.models.resnet34()))]:
    try:
        call()
    except fxprune.FxpruneError as e:
        print(f"{what}: {type(e).__name__}: {str(e)[:300]}")"""),
    ("md", """\
`fxprune.export` writes a `torch.export` program (`.pt2`) for deployment; loading it needs
only torch:"""),
    ("code", """\
pt2 = fxprune.export(loaded, work / "resnet18-half.pt2", torch.randn(1, 3, size, size))
program = torch.export.load(str(pt2))
with torch.no_grad():
    print("exported == loaded:", torch.equal(program.module()(x[:1]), loaded(x[:1])), f"({pt2.stat().st_size / 1e6:.1f} MB)")"""),
    ("md", "`fxprune report` lists the groups and every pinned channel class with its reason; `fxprune bench` on the saved directory compares it with the original:"),
    ("code", """\
assert fxprune_cli("report", "torchvision:mobilenet_v3_small", "--size", str(size)) == 0
assert fxprune_cli("bench", str(out), "--threads", "1", "--iters", "5" if SMALL else "20") == 0"""),
    ("code", """fxprune.plots.layer_widths(model, loaded, title="ResNet-18 widths: original vs the loaded, pruned model")"""),
]


# ------------------------------------------------------------------------------------------
NOTEBOOKS["05_torch_compile_backend"] = [
    ("md", """\
# fxprune as a `torch.compile` backend

`torch.compile(model, backend="fxprune")` prunes the graph Dynamo captured, then hands the
smaller graph to Inductor (`then="inductor"`, the default) or runs it as is (`then="eager"`).
The backend is registered through the `torch_dynamo_backends` entry point, so the string works
after `pip install` without importing fxprune. It is for inference: it prunes copies of the
weights taken at compile time, and refuses to run if a weight changes afterwards."""),
    ("code", SETUP),
    ("code", """\
import importlib.metadata
print([e.name for e in importlib.metadata.entry_points(group="torch_dynamo_backends")])

size = 32 if SMALL else 224
model = torchvision.models.resnet18().eval()
x = torch.randn(2, 3, size, size)

fast = torch.compile(model, backend="fxprune", options={"ratio": 0.5, "exact": True, "then": "eager"}, fullgraph=True)
with torch.no_grad():
    y = fast(x)
print(fxprune.dynamo.reports()[-1])"""),
    ("md", """\
The backend decides exactly what `fxprune.compile` decides with the same options (the same
groups, ranked by the same weights), so the outputs agree:"""),
    ("code", """\
ref = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
with torch.no_grad():
    print("max |backend - fxprune.compile| =", (y - ref(x)).abs().max().item())"""),
    ("md", """\
## A plan made earlier, applied at deployment

`fxprune.backend(plan=...)` applies a plan computed before (for example after sparse
learning). Groups are matched by their member parameters' names, so a plan made by
`fxprune.compile` on the module fits Dynamo's graph of the same model."""),
    ("code", """\
plan = fxprune.compile(model, speedup=2.0, example_inputs=x).meta["fxprune.report"].plan
be = fxprune.backend(plan=plan, then="eager")
with torch.no_grad():
    torch.compile(model, backend=be)(x)
print(be.reports[-1].summary_rows())"""),
    ("md", """\
## Weights that change are refused, not served stale"""),
    ("code", """\
tmp = torchvision.models.resnet18().eval()
fast_tmp = torch.compile(tmp, backend=fxprune.backend(ratio=0.5, then="eager"))
with torch.no_grad():
    fast_tmp(x)
    tmp.fc.weight.mul_(2)  # e.g. an optimizer step
    try:
        fast_tmp(x)
    except fxprune.dynamo.StaleWeightsError as e:
        print("StaleWeightsError:", e)"""),
    ("md", """\
## Latency

Eager original, Inductor original, and the fxprune backend with `then="eager"` and
`then="inductor"`, measured here on this machine (CPU). With the small CI setting the Inductor
variants are skipped (compiling takes longer than the notebook's budget there)."""),
    ("code", """\
import statistics
import matplotlib.pyplot as plt

def ms(fn, x, iters=5 if SMALL else 20):
    with torch.no_grad():
        fn(x); fn(x)
        times = []
        for _ in range(iters):
            t = time.perf_counter(); fn(x); times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)

torch._dynamo.reset()
xb = torch.randn(1, 3, size, size)
variants = {"eager": model,
            "fxprune+eager": torch.compile(model, backend="fxprune", options={"ratio": 0.5, "then": "eager"})}
if not SMALL:
    variants["inductor"] = torch.compile(model, backend="inductor")
    variants["fxprune+inductor"] = torch.compile(model, backend="fxprune", options={"ratio": 0.5})
times = {k: ms(f, xb) for k, f in variants.items()}
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.barh(list(times), list(times.values()), color="tab:blue")
ax.set_xlabel("ms per batch-1 forward (CPU)")
ax.set_title(f"ResNet-18 at {size}x{size}, ratio 0.5")
for i, v in enumerate(times.values()):
    ax.text(v, i, f" {v:.1f}", va="center")
fig"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["06_transformers_and_heads"] = [
    ("md", """\
# Transformers, heads, and recurrent layers

Attention is found from the graph, not from class names: a reshape of a projection into
(heads, head_dim), the matmuls or `scaled_dot_product_attention` that use the head index as a
batch dim, and the contraction over head_dim. `compile(..., heads=...)` chooses the unit:
`"heads"` (default) removes whole heads, `"head_dim"` keeps every head and shrinks each one,
`"both"` spreads the ratio over the two. Every number that depends on them (reshape sizes,
`num_heads`, the softmax scale) is re-derived by the rewrite."""),
    ("code", SETUP),
    ("code", """\
import timm
img = 64 if SMALL else 224
vit = timm.create_model("vit_small_patch16_224", img_size=img).eval()
x = torch.randn(1, 3, img, img)
small = fxprune.compile(vit, 0.5, example_inputs=x, exact=True, heads="heads")
print(small.meta["fxprune.report"])
print(fxprune.verify(vit, small, x))"""),
    ("md", "Every attention block kept half its heads; the reshape literals in the pruned graph agree:"),
    ("code", """\
sd = small.state_dict()
head_dim = vit.blocks[0].attn.head_dim
for i in range(len(vit.blocks)):
    before = vit.blocks[i].attn.qkv.weight.shape[0] // 3 // head_dim
    after = sd[f"blocks.{i}.attn.qkv.weight"].shape[0] // 3 // head_dim
    print(f"block {i}: {before} -> {after} heads")
reshapes = [n.args[1:] for n in small.graph.nodes if n.op == "call_method" and n.target == "reshape" and len(n.args) == 6]
print("qkv reshape literals:", reshapes[0])"""),
    ("md", """\
Default mode also prunes the embedding dim, which every LayerNorm normalizes over: those groups
are *approximate* (removing them changes the statistics), and the report lists them apart with
the output deviation they cause."""),
    ("code", """\
approx = fxprune.compile(vit, 0.3, example_inputs=x, verify=True)
print(approx.meta["fxprune.report"])"""),
    ("code", """fxprune.plots.layer_widths(vit, small, title="ViT-S/16 widths, exact mode, heads halved")"""),
    ("md", """\
## Hugging Face models: the `torch.export` capture

`symbolic_trace` cannot trace Hugging Face models; `capture="auto"` (the default) falls back to
`torch.export` (non-strict) and maps its ATen ops onto the same rules. A small random Llama with
grouped-query attention keeps its query heads a multiple of its key/value heads:"""),
    ("code", """\
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=100, use_cache=False)
torch.manual_seed(0)
llama = LlamaForCausalLM(cfg).eval()
tokens = torch.randint(0, 100, (1, 12))
small_llama = fxprune.compile(llama, 0.5, example_inputs=(tokens,), exact=True, verify=True)
rep = small_llama.meta["fxprune.report"]
print(rep)
sd = small_llama.state_dict()
print("q_proj rows:", sd["model.layers.0.self_attn.q_proj.weight"].shape[0], " k_proj rows:",
      sd["model.layers.0.self_attn.k_proj.weight"].shape[0])"""),
    ("md", """\
## LSTM hidden units

`nn.LSTM`/`nn.GRU` hidden units are pruned across all gate blocks of every weight; the input
size follows the upstream dim."""),
    ("code", """\
from torch import nn
class TextLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1000, 64)
        self.rnn = nn.LSTM(64, 128, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(256, 4)
    def forward(self, t):
        out, _ = self.rnn(self.emb(t))
        return self.fc(out[:, -1])
lstm = TextLSTM().eval()
t = torch.randint(0, 1000, (2, 20))
small_lstm = fxprune.compile(lstm, 0.5, example_inputs=t, exact=True, verify=True)
print(small_lstm.rnn)
print(small_lstm.meta["fxprune.report"].verification)"""),
    ("code", """fxprune.plots.layer_widths(lstm, small_lstm, title="LSTM classifier widths")"""),
]


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src) for kind, src in cells]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
    return nb


def main(argv: list[str]) -> int:
    run = "--no-run" not in argv
    wanted = [a for a in argv if not a.startswith("--")]
    for name, cells in NOTEBOOKS.items():
        if wanted and not any(w in name for w in wanted):
            continue
        nb = build(name, cells)
        if run:
            t = time.perf_counter()
            NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
            print(f"{name}: executed in {time.perf_counter() - t:.1f}s")
        nbformat.write(nb, HERE / f"{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
