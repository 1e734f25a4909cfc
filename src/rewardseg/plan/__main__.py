"""``python -m rewardseg.plan --readme README.md [--check]``: the README's GPU-hours."""
from .readme import main

raise SystemExit(main())
