"""python -m fastlm: the command line (fastlm.cli)."""
import sys

from fastlm.cli import main

sys.exit(main())
