"""``python -m detopt.tune.worker TUNE_YAML INDEX [DEADLINE]``: one worker process of ``detopt tune
--workers K`` (a module of its own, so running it does not re-import :mod:`detopt.tune.hpo`)."""

import sys

from detopt.tune.hpo import worker_main

if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
