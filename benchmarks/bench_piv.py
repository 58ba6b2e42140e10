"""PIN-verify + sign round trips per second: through pcscd against the simulator in its own
process, and the same session in-process with no PC/SC stack, so the stack's cost shows as
a ratio measured in the same run. A bare ECDSA P-256 signature loop is the baseline.

    .venv/bin/python benchmarks/bench_piv.py [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench_common import attached, free_reader, rate
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from devices.protocol.piv import Slot
from devices.tokens.piv import PivSession
from devices.transports.pcsc import PcscContext
from firmware_sim.attach.inprocess import InProcessConnection
from firmware_sim.tokens import piv as sim_piv

CHALLENGE = b"benchmark challenge"


def verify_and_sign(session: PivSession) -> Callable[[], object]:
    def round_trip() -> bytes:
        session.verify_pin("123456")
        return session.sign(Slot.AUTHENTICATION, CHALLENGE)

    return round_trip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--minimum", type=int, default=20, help="operations per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()

    reader = free_reader()
    if reader is None:
        return 2

    with tempfile.TemporaryDirectory() as folder:
        pcsc_state = Path(folder) / "pcsc.json"
        local_state = Path(folder) / "local.json"
        sim_piv.new_card_state(pcsc_state, provision=True)
        local = sim_piv.new_card_state(local_state, provision=True)

        key = ec.generate_private_key(ec.SECP256R1())
        bare, bare_n = rate(
            lambda: key.sign(CHALLENGE, ec.ECDSA(hashes.SHA256())), args.seconds, args.minimum
        )

        session = PivSession(InProcessConnection(sim_piv.make_card(local)))
        session.select()
        in_process, in_process_n = rate(verify_and_sign(session), args.seconds, args.minimum)

        with attached("piv", pcsc_state, reader), PcscContext() as context:
            with context.connect(reader.name) as connection:
                session = PivSession(connection)
                session.select()
                through_pcscd, pcscd_n = rate(verify_and_sign(session), args.seconds, args.minimum)

    results = {
        "bare_ecdsa_p256_sign_per_s": round(bare, 1),
        "in_process_verify_sign_per_s": round(in_process, 1),
        "pcscd_verify_sign_per_s": round(through_pcscd, 1),
        "pcscd_vs_in_process_ratio": round(through_pcscd / in_process, 3),
        "in_process_vs_bare_sign_ratio": round(in_process / bare, 3),
        "operations": {"bare": bare_n, "in_process": in_process_n, "pcscd": pcscd_n},
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"bare ECDSA P-256 sign         {bare:10.1f} /s   (baseline)")
        print(
            f"verify+sign in-process        {in_process:10.1f} /s   "
            f"{in_process / bare:.3f} x baseline"
        )
        print(
            f"verify+sign through pcscd     {through_pcscd:10.1f} /s   "
            f"{through_pcscd / in_process:.3f} x in-process"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
