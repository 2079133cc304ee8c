"""Rebuild the corpus and train the default SAE of the gemma-3-270m preset (about an hour on 2 CPU cores).

Usage: python scripts/train_default_sae.py [--tokens N] [--resume CHECKPOINT_DIR]
Equivalent CLI: saelora sae train --build-corpus
"""

from saelora_core.cli.app import main

if __name__ == "__main__":
    import sys

    main(["sae", "train", "--build-corpus", *sys.argv[1:]])
