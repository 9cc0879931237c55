import sys

from dinomix_core.cli.main import main

sys.exit(main())
