"""How the suite is shared among pytest-xdist workers (``-n``, ``--dist loadfile``).

Each test file is one unit of work, as with xdist's own ``loadfile``, so module-scoped fixtures
(a started service, a generated export, rendered speech) are built once. The integration files
are one unit together: the machine has one pcscd with two vpcd readers, and a card attached or a
reader listed by one test must not meet another test's card session. The integration files named
in ``NO_PCSC`` reach neither pcscd nor the device CLI and stay units of their own.

xdist's ``xdist_group`` marks would say the same, but with pytest 9.2 ``--dist loadgroup``
ignores them (pytest-xdist issue 1386), so the units are made here from the test paths.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests assert what holds, never how fast it is found: on a busy machine (two cores,
# the suite in parallel) neither a slow example nor slow generation fails them.
settings.register_profile("akkreditiv", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("akkreditiv")

INTEGRATION = "tests/integration/"
PCSCD_UNIT = "tests/integration (pcscd)"
NO_PCSC = frozenset(
    {
        "tests/integration/test_legacy_import_kill.py",
        "tests/integration/test_migration_kill.py",
        "tests/integration/test_reverse_proxy.py",
        "tests/integration/test_scale_out.py",
        "tests/integration/test_serve_load.py",
        "tests/integration/test_serve_start.py",
        "tests/integration/test_storage_postgres.py",
    }
)


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or the shared pcscd unit."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(INTEGRATION) and path not in NO_PCSC:
        return PCSCD_UNIT
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadfile``: xdist's file scheduling, with the pcscd files merged."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class FileAndPcscdScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # The pcscd unit is the longest and cannot be split: hand it out first.
            if PCSCD_UNIT in self.workqueue:
                self.workqueue.move_to_end(PCSCD_UNIT, last=False)
            super()._assign_work_unit(node)

    return FileAndPcscdScheduling(config, log)
