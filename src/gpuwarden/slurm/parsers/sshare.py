"""``sshare --noheader --parsable2 --format=Account,FairShare`` -> FairShare by account.

Read the way prometheus-slurm-exporter reads the same command (its ``slurm_account_fairshare``
keeps its meaning here): the root and first-level rows count (a row indented by two spaces
or more, a deeper level, does not), a later row of the same account replaces an earlier one
(the invoking user's own row under an account follows the account's), and an empty
FairShare (an account's own row, under Fair Tree) is 0.
"""

from __future__ import annotations

from gpuwarden.slurm.errors import ParseError

SSHARE_ARGS = ("--noheader", "--parsable2", "--format=Account,FairShare")


def parse_sshare(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        account, _, value = line.partition("|")
        value = value.split("|", 1)[0].strip()
        try:
            out[account.strip()] = float(value) if value else 0.0
        except ValueError as exc:
            raise ParseError(f"sshare: FairShare {value!r} of account {account.strip()!r} "
                             "is not a number") from exc
    return out
