"""``python -m dlgpu``: the same command line as the ``dlgpu`` script."""

import sys

from dlgpu.cli import main

sys.exit(main())
