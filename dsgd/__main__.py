from __future__ import annotations

import sys

from dsgd.cli import main

sys.exit(main())
