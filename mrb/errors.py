"""The one exception type MRB raises for bad input (the CLI prints it and exits 2), and the words for hub failures."""

from __future__ import annotations


class MRBError(Exception):
    """A user-facing error: the message names the file, task, query or document at fault."""


def exception_chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during, outermost first."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def hub_failure(
    exc: BaseException, repo: str, revision: str | None, repo_type: str = "model", elsewhere: str | None = None
) -> str | None:
    """Why fetching `repo` from the Hugging Face hub failed, with the fix ("it" is the repository), or None when
    the exception chain shows no hub cause: gated, no such revision, not cached while the hub is off (or cannot
    be reached), no such repository. `elsewhere`: how to fetch it on a machine with the hub (default: `hf
    download` into the hub cache, to copy here)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    chain = exception_chain(exc)
    page = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo}"
    download = f"hf download {repo}{' --repo-type dataset' if repo_type == 'dataset' else ''}"
    download += f" --revision {revision}" if revision else ""
    elsewhere = elsewhere or f"`{download}` and copy the hub cache here"
    if any(isinstance(e, GatedRepoError) for e in chain):
        return f"it is a gated repository: accept its conditions on {page} and log in (`hf auth login`, or set HF_TOKEN)"
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return f"the hub has no revision {revision!r} of it: check the revision (a preset's pin, or --revision)"
    offline = constants.HF_HUB_OFFLINE and any("offline" in str(e).lower() or "couldn't connect" in str(e).lower() for e in chain)
    if any(isinstance(e, LocalEntryNotFoundError) for e in chain) or offline:
        if not constants.HF_HUB_OFFLINE:
            return f"the hub cannot be reached and it is not in the local hub cache: check the network (or {elsewhere})"
        return (
            f"it is not in the local hub cache and the hub is off (HF_HUB_OFFLINE=1): fetch it where the hub can be "
            f"reached ({elsewhere}), or unset HF_HUB_OFFLINE"
        )
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        what = "a hub dataset repository" if repo_type == "dataset" else "a local folder nor a hub repository"
        return f"it is neither {what} you can read (a typo, or a private repository: `hf auth login`)"
    return None
