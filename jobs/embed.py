"""Ray Jobs entry point for ``hamr embed`` (sentence embeddings of a training set, cached):

    ray job submit --working-dir . -- python jobs/embed.py --data DATA --output /shared/emb.npy

Takes the flags of ``hamr embed``. It runs in the job's driver process (on the head node);
point ``--cache-dir`` (or ``$HAMR_CACHE``) at storage the workers share and the neighbour
actor of later training runs reuses the embeddings instead of computing them again.
"""
from __future__ import annotations

import sys

from _common import use_working_dir

if __name__ == "__main__":
    use_working_dir()
    from hamr_dist.cli import main
    sys.exit(main(["embed", *sys.argv[1:]]))
