#!/usr/bin/env python
"""Write the data card of a tokenized dataset as JSON (by default: the embedded model's card).

The embedded default model's checkpoint predates data cards, so its card lives beside it in
``crystalforge/assets/default_model/data_card.json``, computed from the dataset it was
trained on (the recipe in MODEL_CARD.md):

    crystalforge data prepare ../shared/data/perov_5/val.csv ../shared/data/carbon_24/val.csv \\
        runs/data_nodedup --steps preprocess,split,tokenize --seed 0
    python scripts/build_data_card.py runs/data_nodedup
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crystalforge.cif.io import atomic_write_text
from crystalforge.model.datacard import EMBEDDED_CARD, card_from_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="tokenized dataset folder (train.bin, starts.pkl, meta.pkl)")
    parser.add_argument("--to", type=Path, default=EMBEDDED_CARD,
                        help="where to write (default: the embedded model's card)")
    args = parser.parse_args(argv)
    card = card_from_dataset(args.dataset)
    atomic_write_text(args.to, json.dumps(card.to_dict(), indent=1) + "\n")
    print(f"wrote {args.to}: {card.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
