"""``spine-align models``: the installed models, where each lives, and the folders searched."""

from __future__ import annotations

import argparse
import json

HELP = "list the installed models (shipped and user folders): name, protocol, version, folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", default=None, help="only models for this protocol")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from ..models.registry import list_models, model_problems, model_search_path
    from ..protocols import get_protocol

    if args.protocol is not None:
        get_protocol(args.protocol)  # an unknown protocol is one sentence, not an empty list
    models = list_models(args.protocol)
    rows = [{"name": m["name"], "protocol": m["protocol"], "version": m["version"], "folder": m["folder"],
             "hides": m["hidden"]} for m in models]
    path = [str(p) for p in model_search_path()]
    problems = model_problems(args.protocol)
    if args.json:
        print(json.dumps({"search_path": path, "models": rows, "problems": problems}, indent=1))
        return 0
    print("Model folders, searched in this order (the first model of a name wins; the first model of a "
          "protocol is its default):")
    for p in path:
        print(f"  {p}")
    if not rows:
        print("No model installed" + (f" for {args.protocol}." if args.protocol else "."))
    for r in rows:
        print(f"{r['name']}  {r['version']}  ({r['protocol']})  {r['folder']}")
        for h in r["hides"]:
            print(f"    note: hides {h} (same name, later in the search path; not used)")
    for p in problems:
        print(f"unusable: {p}")
    return 0
