"""`metalora push PATH REPO_ID`: share an adapter or meta-init on the Hugging Face Hub."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Push an adapter or meta-init folder to a Hugging Face Hub model repo, as one commit.

Uploaded: adapter_config.json, adapter_model.safetensors, metalora.json, metalora_*.safetensors (the
head; a meta-init's metalora_init.safetensors) and a generated model card README.md (library_name: peft, base_model, tags, metrics as
model-index eval results, lineage). Your folder is not modified; other files in it are not uploaded;
pickled weights (*.bin, *.pt, *.pth, *.pkl, *.ckpt) are refused.

Authentication: HF_TOKEN (or the token saved by `hf auth login`), with write access to the
namespace. HF_ENDPOINT points at another Hub (a mirror, a local test server)."""

EPILOG = """\
examples:
  metalora push runs/kitchen-adapter my-org/kitchen-sentiment
  metalora push runs/meta-init my-org/metalora-sentiment-init --private --revision v2 \\
      --commit-message "FOMAML, 40 scenarios"
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push", help="Push an adapter or meta-init folder to the Hugging Face Hub (with a model card).",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="PATH", help="The adapter or meta-init folder (has adapter_config.json, "
                        "adapter_model.safetensors and metalora.json).")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Target model repo, ORG/NAME (created if missing).")
    parser.add_argument("--private", action="store_true",
                        help="Create the repo as private (only applies when the repo does not exist yet).")
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="Branch to commit to (created from main if missing). Default: main.")
    parser.add_argument("--commit-message", metavar="MESSAGE", default=None,
                        help="Commit message. Default: 'metalora adapter upload' (or 'meta-init').")
    parser.set_defaults(func=run)


def run(args) -> int:
    from metalora import hub

    oid = hub.push(args.path, args.repo_id, private=args.private, revision=args.revision,
                   commit_message=args.commit_message)
    repo_id, spec_revision = hub.parse_spec(args.repo_id)
    branch = args.revision or spec_revision or "main"
    print(f"pushed {args.path} to {hub.endpoint()}/{repo_id} (branch {branch}, commit {oid})")
    print(f"pull it with: metalora pull {repo_id}@{oid}")
    return 0
