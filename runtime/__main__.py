"""`python -m serin.runtime --model_name NAME --model_dir DIR --http_port P` (KServe style)."""

import sys

from serin.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
