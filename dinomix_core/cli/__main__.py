import sys

from dinomix_core.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
