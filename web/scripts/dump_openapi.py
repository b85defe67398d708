"""Print the control plane's OpenAPI document (the web UI's typed client is generated from it).

Run by `npm run refresh:api` with the repository's virtualenv; no server, no state needed."""

from __future__ import annotations

import json
import sys

from gpuwarden.api.app import create_app


def main() -> None:
    app = create_app(None, run_scraper=False)  # type: ignore[arg-type]  # openapi() never reads cp
    json.dump(app.openapi(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
