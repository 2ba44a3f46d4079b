"""``spine-align protocols``: list protocols, their landmarks and parameters."""

from __future__ import annotations

import json

from ..protocols import get_protocol, list_protocols

HELP = "list the measurement protocols, their landmark IDs and parameters"


def add_arguments(parser) -> None:
    parser.add_argument("protocol", nargs="?", help="show one protocol in full")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    protos = [get_protocol(args.protocol)] if args.protocol else list_protocols()
    if args.json:
        data = [p.to_dict() for p in protos]
        print(json.dumps(data[0] if args.protocol else data, indent=1))
        return 0
    for p in protos:
        print(f"{p.id}  ({p.view}, study {p.study}): {p.title} — {len(p.landmarks)} landmarks, {len(p.parameters)} parameters")
        if args.protocol:
            print("  landmarks:")
            for lm in p.landmarks:
                print(f"    {lm.id:<12} {lm.description}{' (optional)' if lm.optional else ''}")
            print("  parameters:")
            for par in p.parameters:
                print(f"    {par.id:<14} [{par.unit}] {par.title}: {par.definition}")
        else:
            print(f"  parameters: {', '.join(p.parameter_ids)}")
    return 0
