"""AG News (real text) with an LSTM classifier: train, prune to 2x fewer MACs, fine-tune.

Only the AG News *test* split is in the shared data folder (7,600 rows: class, title,
description), so it is split, deterministically, into a training part and a held-out part
(default 6,000 / 1,600). Tokenizer: lowercase, regex words; the vocabulary comes from the
training part only (words seen at least twice). Model: Embedding(64) -> bidirectional LSTM
(128 per direction) -> max over time -> Linear(4). Trained a few epochs on CPU with Adam,
pruned with ``fxprune.compile(speedup=2.0)`` (the LSTM's hidden units, every gate block and
both directions, and the embedding width), then fine-tuned briefly with the same optimizer
settings. Prints held-out accuracy before pruning, after pruning (before fine-tuning) and
after fine-tuning, with parameters and MACs per sequence.

    python benchmarks/agnews_lstm.py                  # about 2-3 minutes on 2 CPU cores
    python benchmarks/agnews_lstm.py --epochs 2 --ft-epochs 1 --threads 1

The data is found at ``$FXPRUNE_DATA`` or ``../shared/data`` beside the repository root.
"""

from __future__ import annotations

import argparse
import csv
import platform
import re
import time
from collections import Counter

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

import fxprune
from _data import DataUnavailable, data_root

_WORD = re.compile(r"[a-z0-9']+")
PAD, UNK = 0, 1


def load_ag_news_test() -> tuple[list[str], list[int]]:
    """Texts (title + description) and labels 0..3 of the AG News test split."""
    path = data_root() / "ag_news" / "ag_news_csv" / "test.csv"
    if not path.exists():
        raise DataUnavailable(f"AG News not found at {path} (set FXPRUNE_DATA to the shared data folder)")
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            labels.append(int(row[0]) - 1)
            texts.append(f"{row[1]} {row[2]}".replace("\\", " "))
    return texts, labels


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_vocab(texts: list[str], min_count: int = 2) -> dict[str, int]:
    counts = Counter(w for t in texts for w in tokenize(t))
    words = sorted(w for w, c in counts.items() if c >= min_count)
    return {w: i + 2 for i, w in enumerate(words)}


def encode(texts: list[str], vocab: dict[str, int], length: int) -> torch.Tensor:
    out = torch.full((len(texts), length), PAD, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [vocab.get(w, UNK) for w in tokenize(t)][:length]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


class LSTMClassifier(nn.Module):
    """Embedding -> bidirectional LSTM -> max over time -> linear."""

    def __init__(self, vocab_size: int, dim: int = 64, hidden: int = 128, layers: int = 1, classes: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.lstm = nn.LSTM(dim, hidden, layers, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(tokens))
        return self.fc(self.drop(out.max(dim=1)[0]))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch: int, seed: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    hits = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch)))
    return hits / len(x)


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("s" if n != 1 else "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=6000, help="rows of the test split used for training")
    ap.add_argument("--length", type=int, default=48, help="tokens per text (truncate / pad)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--speedup", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    texts, labels = load_ag_news_test()
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(args.seed)).tolist()
    tr, ho = order[: args.train], order[args.train:]
    vocab = build_vocab([texts[i] for i in tr])
    x_tr, x_ho = encode([texts[i] for i in tr], vocab, args.length), encode([texts[i] for i in ho], vocab, args.length)
    y = torch.tensor(labels)
    y_tr, y_ho = y[tr], y[ho]
    print(f"AG News test split: {len(tr)} train / {len(ho)} held-out, vocabulary {len(vocab) + 2}, "
          f"{args.length} tokens per text")  # fmt: skip

    model = LSTMClassifier(len(vocab) + 2)
    t_train = train(model, x_tr, y_tr, args.epochs, args.lr, args.batch, args.seed)
    acc_base = accuracy(model, x_ho, y_ho)

    example = x_tr[:1]
    t0 = time.perf_counter()
    small = fxprune.compile(model, speedup=args.speedup, example_inputs=example, exact=True)
    t_prune = time.perf_counter() - t0
    check = fxprune.verify(model, small, x_ho[:32])
    acc_pruned = accuracy(small, x_ho, y_ho)
    t_ft = train(small, x_tr, y_tr, args.ft_epochs, args.ft_lr, args.batch, args.seed + 1)
    acc_ft = accuracy(small, x_ho, y_ho)

    base_params, base_macs = fxprune.count_params(model), fxprune.count_macs(model, (example,))
    params, macs = fxprune.count_params(small), fxprune.count_macs(small, (example,))
    rows = [
        ["base", f"{acc_base:.4f}", base_params, base_macs, f"{model.emb.embedding_dim}/{model.lstm.hidden_size}"],
        ["pruned, before fine-tuning", f"{acc_pruned:.4f}", params, macs,
         f"{small.emb.embedding_dim}/{small.lstm.hidden_size}"],
        [f"pruned + {_epochs(args.ft_epochs)} fine-tune", f"{acc_ft:.4f}", params, macs,
         f"{small.emb.embedding_dim}/{small.lstm.hidden_size}"],
    ]  # fmt: skip
    print(tabulate(rows, headers=["model", "held-out acc", "params", "MACs / text", "emb dim / hidden"]))
    print(f"MACs {base_macs / macs:.2f}x fewer, parameters {base_params / params:.2f}x fewer; {check}")
    print(f"train {t_train:.0f} s ({_epochs(args.epochs)}), prune {t_prune:.1f} s, fine-tune {t_ft:.0f} s "
          f"({_epochs(args.ft_epochs)}); torch {torch.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip


if __name__ == "__main__":
    main()
