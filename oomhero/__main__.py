import sys

from oomhero.cli import main

sys.exit(main())
