"""``tests/pods``: the pod bootstrap on a fresh Debian (root, debootstrap, namespaces), run
by ``make test-pods`` (``GPUWARDEN_TEST_PODS=1``), never by plain ``make test``."""

from __future__ import annotations

import os

if os.environ.get("GPUWARDEN_TEST_PODS") != "1":
    collect_ignore_glob = ["test_*.py"]

from tests.providers.conftest import db  # noqa: F401  the state DB the providers use
