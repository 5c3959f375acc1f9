"""The model zoo run (``python benchmarks/zoo.py --help``): fxprune, and optionally
Torch-Pruning, over torchvision and a timm sample, into docs/zoo.jsonl and docs/zoo.md. The code
is the package ``benchmarks/modelzoo/`` (a folder of the same name as this script would shadow
it on import)."""

from modelzoo.cli import main

if __name__ == "__main__":
    main()
