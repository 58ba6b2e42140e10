"""The ``akkreditiv`` command: the composition root that wires devices and the simulator."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from akkreditiv.cli import (
    demo_legacy,  # noqa: F401 - registers "demo legacy"
    demo_rp,  # noqa: F401 - registers "demo rp"
)
from akkreditiv.cli.audit import audit_app
from akkreditiv.cli.demo import demo_app
from akkreditiv.cli.devices import devices_app
from akkreditiv.cli.fido import fido_app
from akkreditiv.cli.keys import keys_app
from akkreditiv.cli.legacy import legacy_app
from akkreditiv.cli.maintenance import maintenance_app
from akkreditiv.cli.migration import migration_app
from akkreditiv.cli.migration_flow import flow_app
from akkreditiv.cli.otp import otp_app
from akkreditiv.cli.piv import piv_app
from akkreditiv.cli.providers import providers_app
from akkreditiv.cli.serve import serve
from akkreditiv.cli.sim import sim_app

app = typer.Typer(
    help="akkreditiv: an open eID credential service built around physical credentials.\n\n"
    "Run the service (serve), find and use tokens (devices), run the token simulator (sim).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(devices_app, name="devices")
devices_app.add_typer(piv_app, name="piv")
devices_app.add_typer(fido_app, name="fido")
devices_app.add_typer(otp_app, name="otp")
app.add_typer(sim_app, name="sim")
app.command("serve")(serve)
app.add_typer(demo_app, name="demo")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(providers_app, name="providers")
app.add_typer(legacy_app, name="legacy")
app.add_typer(migration_app, name="migration")
app.add_typer(maintenance_app, name="maintenance")
migration_app.add_typer(flow_app, name="flow")


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log device traffic (never PINs) to stderr.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
