import sys

from research.cli.commands import main

sys.exit(main())
