"""`metalora pull REPO_ID[@REVISION]`: download an adapter or meta-init from the Hugging Face Hub."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Download an adapter or meta-init from a Hugging Face Hub model repo and print its local folder.

Only safe files are downloaded (adapter_config.json, adapter_model.safetensors, metalora.json,
metalora_*.safetensors, README.md); repos whose weights are only pickled are
refused. Without --to the files go into the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE),
which also makes them available later with HF_HUB_OFFLINE=1. `metalora adapt --init` and
`metalora predict --adapter` pull on demand the same way.

HF_TOKEN is needed for private repos; HF_ENDPOINT points at another Hub."""

EPILOG = """\
examples:
  metalora pull my-org/kitchen-sentiment
  metalora pull my-org/metalora-sentiment-init@v2 --to inits/sentiment
  metalora pull hf://my-org/kitchen-sentiment@3f2c1e0...
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pull", help="Download an adapter or meta-init from the Hugging Face Hub (safetensors only).",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="REPO_ID[@REVISION]",
                        help="The repo, ORG/NAME, optionally @BRANCH / @TAG / @COMMIT (also hf://ORG/NAME@REV).")
    parser.add_argument("--revision", default=None,
                        help="Branch, tag or commit to pull (same as @REVISION). Default: main.")
    parser.add_argument("--to", metavar="DIR", default=None,
                        help="Copy the files into DIR (written atomically). DIR must be missing, empty or an "
                             "earlier pull of the same repo. Default: use the Hugging Face cache folder directly.")
    parser.set_defaults(func=run)


def run(args) -> int:
    from metalora import hub

    path = hub.pull(args.spec, revision=args.revision, to=args.to)
    print(path)
    return 0
