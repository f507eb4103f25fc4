"""`vitzoo push`: export a run or model folder for the Hugging Face Hub, with a model card, and upload it."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="publish a run's model to the Hugging Face Hub, with a model card",
        description="Export RUN_OR_MODEL_DIR as a Hub-ready folder (model.safetensors, config.json with the label "
        "names, preprocessor_config.json, vitzoo.json with the spec and the training arguments, README.md: the "
        "model card) and upload it in one commit. The token comes from HF_TOKEN or `hf auth login`; it is never "
        "printed or saved. A failed upload leaves the export in place: push the export folder to retry.",
    )
    parser.add_argument("path", metavar="RUN_OR_MODEL_DIR", help="a run folder (with model/) or a model folder")
    parser.add_argument("--repo-id", required=True, help="the Hub repository, as USER/NAME or ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing; default: main)")
    parser.add_argument("--dry-run", action="store_true", help="export and list what would be uploaded; upload nothing")
    parser.add_argument(
        "--export-dir",
        default=None,
        help="where to write the export (default: RUN/hub_export, or MODEL_DIR-hub_export)",
    )
    parser.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    from vitzoo.publish import push

    push(
        args.path,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        export_dir=args.export_dir,
    )
    return 0
