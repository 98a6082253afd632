"""`python -m vdo_gateway`: the REST API on VDO_HOST:VDO_PORT."""

from __future__ import annotations

import sys

from vdo_gateway.server import serve
from vdo_kernel.settings import Settings


def main() -> int:
    try:
        serve(Settings())
    except RuntimeError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
