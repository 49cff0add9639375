import sys

from proximity.cli import main

sys.exit(main())
