"""``python -m vitedit.sweep ...`` (the executors run ``python -m vitedit.sweep exec <job.json>``)."""

import sys

from .cli import main

sys.exit(main())
