"""``python -m tests.integration.worker_main worker``: the warelay CLI with the test agent registered."""

from __future__ import annotations

import tests.integration.agents  # noqa: F401  # registers the test-echo agent
from warelay.cli import main

if __name__ == "__main__":
    main()
