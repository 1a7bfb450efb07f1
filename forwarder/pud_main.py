"""Entry point of ``process-user-data``."""

import sys


def main() -> int:
    print("process-user-data: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
