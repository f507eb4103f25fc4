"""The upload: one `create_repo` + one `upload_folder` commit of the export; `push` and `push_run`
(what a recipe's --push-to-hub calls) export first, `check_push` refuses a push that could not work
before any training.

    push("runs/digits", "someone/deit-tiny-digits", private=True)  # export + create_repo + one upload_folder
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from vitzoo.errors import BadInputError
from vitzoo.io import read_json
from vitzoo.publish.export import Export, check_repo_id, existing_export, export_model, is_export
from vitzoo.publish.source import VITZOO_FILE
from vitzoo.publish.tokens import REDACTED, PushError, hub_token, login_hint


def check_push(repo_id: str | None) -> None:
    """Fail fast, before a training run, if its --push-to-hub could not work: bad repo id or no token."""
    if not repo_id:
        raise BadInputError("--push-to-hub needs --hub-model-id USER/NAME (the Hub repository to create or update)")
    check_repo_id(repo_id)
    if not hub_token():
        raise PushError(login_hint("--push-to-hub needs a Hugging Face token."))


@dataclasses.dataclass
class PushResult:
    export: Export
    repo_id: str
    revision: str | None
    private: bool
    uploaded: bool
    url: str | None = None


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    errors: list[type[BaseException]] = [HfHubHTTPError, OfflineModeIsEnabled, OSError, TimeoutError]
    for module, name in (("httpx", "HTTPError"), ("httpx2", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _explain(error: BaseException, repo_id: str, token: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set; unset it to upload"
    status = (
        getattr(getattr(error, "response", None), "status_code", None) if isinstance(error, HfHubHTTPError) else None
    )
    if status == 401:
        reason = "the Hub rejected the token (401); log in again with `hf auth login` or fix HF_TOKEN"
    elif status == 403:
        reason = f"the token may not write to {repo_id.split('/')[0]}/ (403); use a token with write access to it"
    else:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no message'}"
    return reason.replace(token, REDACTED) if token else reason


def upload(
    export: Export, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | None = None
) -> str:
    """create_repo (exist_ok) + the branch if needed + ONE upload_folder commit; returns the commit URL."""
    from huggingface_hub import HfApi

    token = token or hub_token()
    if not token:
        raise PushError(
            login_hint(
                f"No Hugging Face token found, so nothing was uploaded; the export in {export.path} is complete."
            )
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=export.path,
            repo_type="model",
            revision=revision,
            commit_message=f"Upload {export.kind} exported by vitzoo",
        )
    except _network_errors() as error:
        retry = f"vitzoo push {export.path} --repo-id {repo_id}" + (f" --revision {revision}" if revision else "")
        raise PushError(
            f"upload to {repo_id} failed: {_explain(error, repo_id, token)}. Nothing was committed (one commit per "
            f"push); the export in {export.path} is intact. Retry with `{retry}`."
        ) from None
    return str(getattr(commit, "commit_url", None) or commit)


def push(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    export_dir: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
) -> PushResult:
    """Export `path` (a run or model folder) and upload it to `repo_id` in one commit.

    `dry_run` exports and lists the files without any network call. An existing export folder
    (a retry) is uploaded as it is.
    """
    check_repo_id(repo_id)
    path = os.fspath(path)
    if os.path.isdir(path) and is_export(path) and export_dir is None:
        made_for = read_json(os.path.join(path, VITZOO_FILE)).get("hub_repo_id")
        if made_for != repo_id:
            raise BadInputError(
                f"{path} was exported for {made_for} (its card names that repo); push the run or model folder "
                f"to export it again for {repo_id}"
            )
        export = existing_export(path)
        echo(f"{path} is an export already; uploading it as it is")
    else:
        export = export_model(path, repo_id, export_dir)
        echo(f"exported {export.kind} to {export.path}:")
    echo(_listing(export))
    where = f"{repo_id}" + (f" (branch {revision})" if revision else "") + (" [private]" if private else "")
    if dry_run:
        echo(f"dry run: would upload these {len(export.files)} files to {where} in one commit; nothing uploaded.")
        return PushResult(export, repo_id, revision, private, uploaded=False)
    token = hub_token()
    if not token:
        raise PushError(
            login_hint(
                f"No Hugging Face token found, so nothing was uploaded; the export in "
                f"{export.path} is complete (push that folder once logged in)."
            )
        )
    echo(f"uploading {len(export.files)} files ({_size(export.total_bytes)}) to {where} ...")
    url = upload(export, repo_id, private=private, revision=revision, token=token)
    echo(f"done: https://huggingface.co/{repo_id}" + (f"/tree/{revision}" if revision else "") + f" (commit {url})")
    return PushResult(export, repo_id, revision, private, uploaded=True, url=url)


def push_run(output_dir: str, repo_id: str, private: bool = False, revision: str | None = None) -> str | None:
    """What a recipe's --push-to-hub calls at the end of training: export + upload; the commit URL."""
    return push(output_dir, repo_id, private=private, revision=revision).url


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _listing(export: Export) -> str:
    width = max(len(name) for name, _ in export.files)
    lines = [f"  {name.ljust(width)}  {_size(size):>9}" for name, size in export.files]
    lines.append(f"  {'total'.ljust(width)}  {_size(export.total_bytes):>9}")
    return "\n".join(lines)
