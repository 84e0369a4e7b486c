"""`python -m featvis_fast.cli ...` (torchrun runs jobs this way)."""
import sys

from . import main

sys.exit(main())
