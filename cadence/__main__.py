import sys

from cadence.commands.cli import main

sys.exit(main())
