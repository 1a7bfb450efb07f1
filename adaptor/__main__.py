"""Entry point of ``cloud-api-adaptor``."""

import sys


def main() -> int:
    print("cloud-api-adaptor: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
